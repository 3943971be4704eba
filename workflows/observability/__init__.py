"""What operators see of the pipeline: Ray metrics and context-prefixed step logs."""
