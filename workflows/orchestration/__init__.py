"""Durable runs on Ray Workflows: ids, DAGs, steps, the retry policy, the run journal, failpoints."""
