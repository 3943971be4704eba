"""One exception root for the platform; retry decisions follow the type.

    OhlcvError
    ├── TerminalError          retrying cannot help: fail the run at once
    │   ├── ConfigError        settings are wrong or a prerequisite (Java) is missing
    │   ├── InputError         a bad argument or a malformed input file
    │   ├── TableNotFound      the catalog lacks a table (run `ohlcv init`)
    │   ├── SchemaMismatch     a table's schema is not the one this code writes
    │   ├── DataFileError      a data file of a table is corrupt or missing (named)
    │   └── RunFailed          a workflow run failed; it can be resumed once the cause is fixed
    └── TransientError         worth another try (same step, same inputs)
        ├── CommitConflict     another writer committed first
        └── ServiceUnavailable the Spark service or the cluster went away
"""

from __future__ import annotations

__all__ = [
    "OhlcvError",
    "TerminalError",
    "ConfigError",
    "InputError",
    "TableNotFound",
    "SchemaMismatch",
    "DataFileError",
    "RunFailed",
    "TransientError",
    "CommitConflict",
    "ServiceUnavailable",
]


class OhlcvError(Exception):
    """Root of every error this project raises on purpose."""


class TerminalError(OhlcvError):
    """Retrying with the same inputs would fail the same way."""


class ConfigError(TerminalError):
    """Settings are invalid or a prerequisite is missing."""


class InputError(TerminalError):
    """A bad argument or a malformed input file; nothing was written."""


class TableNotFound(TerminalError):
    """A table the command needs does not exist in the catalog."""


class SchemaMismatch(TerminalError):
    """A table exists but its schema is not the one this code writes."""


class DataFileError(TerminalError):
    """A data file a table references cannot be read: truncated, corrupt or gone."""


class RunFailed(TerminalError):
    """A workflow run failed; `ohlcv workflows resume ID` continues it once the cause is fixed."""


class TransientError(OhlcvError):
    """A failure that another attempt may not meet."""


class CommitConflict(TransientError):
    """A concurrent writer changed the table between our read and our commit."""


class ServiceUnavailable(TransientError):
    """The Spark service, or the Ray cluster under it, is not reachable."""
