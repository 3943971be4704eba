"""Spark on Ray: the RayDP session kept warm in an actor (`service`), its size (`sizing`), the
Java it needs (`java`), and the requests callers make of it (`client`)."""
