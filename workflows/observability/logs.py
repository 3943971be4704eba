"""Log lines of workflow steps say which workflow and step they come from.

Step code runs in Ray worker processes whose output lands in the Ray logs and the dashboard;
every line of the platform's loggers there is prefixed with `[workflow_id/task_id]`.
"""

from __future__ import annotations

import logging

__all__ = ["bind", "configure"]

_current = {"workflow": "-", "step": "-"}
_FORMAT = "%(asctime)s %(levelname)s [%(workflow)s/%(step)s] %(name)s: %(message)s"
_configured = False


class _StepContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.workflow = _current["workflow"]
        record.step = _current["step"]
        return True


def configure() -> None:
    """Once per worker process: platform loggers write context-prefixed lines to stderr."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_StepContext())
    for name in ("ohlcv", "workflows"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    _configured = True


def bind(workflow_id: str, task_id: str) -> None:
    """Say which workflow step this process is working for now."""
    configure()
    _current.update(workflow=workflow_id, step=task_id)
