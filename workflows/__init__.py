"""Everything Ray: the Spark service on RayDP, pipelines, workflows, the scheduler and the CLI."""
