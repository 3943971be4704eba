"""Which failures another try can cure: the one place where exception types become terminal or
transient, for Python exceptions and for Spark's Java exceptions (read through py4j).

Terminal, the run fails at once:
- a corrupt or missing data file (named in the error, so that someone can restore or remove it);
- schema errors (a table or a file whose columns are not the ones this code reads);
- bugs: any exception the platform does not know (TypeError, NullPointerException, ...).

Transient, the step is tried again after the retry delay:
- lost workers, actors, nodes, Spark executors or the Spark gateway;
- commit conflicts (another writer committed first);
- storage and network timeouts and I/O errors other than "not found" or "access denied".

Only the kind is read from the type. Messages are read for one thing: the data file's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ohlcv.errors import (
    CommitConflict,
    ConfigError,
    DataFileError,
    OhlcvError,
    SchemaMismatch,
    ServiceUnavailable,
    TerminalError,
    TransientError,
)

__all__ = ["classify", "JAVA_DATA_FILE_ERRORS", "JAVA_SCHEMA_ERRORS", "JAVA_TRANSIENT_ERRORS"]

# Java classes, matched against the exception and each of its causes.
JAVA_DATA_FILE_ERRORS = frozenset({
    "org.apache.parquet.io.ParquetDecodingException",
    "org.apache.parquet.io.InvalidFileOffsetException",
    "org.apache.parquet.crypto.ParquetCryptoRuntimeException",
    "java.io.FileNotFoundException",
    "java.io.EOFException",
    "java.util.zip.ZipException",
})
JAVA_SCHEMA_ERRORS = frozenset({
    "org.apache.spark.sql.AnalysisException",
    "org.apache.spark.sql.execution.datasources.SchemaColumnConvertNotSupportedException",
    "org.apache.spark.sql.execution.QueryExecutionException",
})
JAVA_TRANSIENT_ERRORS = frozenset({
    "org.apache.spark.shuffle.FetchFailedException",
    "org.apache.spark.shuffle.MetadataFetchFailedException",
    "org.apache.spark.rpc.RpcTimeoutException",
    "org.apache.spark.storage.BlockNotFoundException",
    "java.util.concurrent.TimeoutException",
    "java.net.SocketTimeoutException",
    "java.net.ConnectException",
    "java.net.SocketException",
    "java.net.UnknownHostException",
    "software.amazon.awssdk.core.exception.SdkClientException",
    "com.amazonaws.SdkClientException",
})
# A Spark job aborted with no cause above: its tasks failed for reasons outside any task's code
# (executors lost, shuffle files gone), after Spark's own task retries.
_SPARK_JOB_ABORTED = "org.apache.spark.SparkException"
# Reader classes: a generic RuntimeException or IOException thrown from one of these is about
# the bytes of a data file ("... is not a Parquet file", a truncated footer).
_DATA_FILE_READERS = ("org.apache.parquet.", "org.apache.spark.sql.execution.datasources.parquet.")
_GENERIC_JAVA = frozenset({"java.lang.RuntimeException", "java.io.IOException"})

_DATA_FILE_PATH = re.compile(r"((?:[a-z][a-z0-9+.-]*:/|/)[^\s,;'\"\]\[]+?\.(?:parquet|avro|orc))", re.IGNORECASE)


def classify(exc: BaseException) -> OhlcvError:
    """The platform's error for `exc`: a TerminalError or a TransientError subclass, one line."""
    exc = _unwrapped(exc)
    if isinstance(exc, OhlcvError):
        return exc
    java = _java_throwable(exc)
    if java is not None:
        return _classify_java(exc, java)
    return _classify_python(exc)


# ---------------------------------------------------------------------------------------- Python


def _classify_python(exc: BaseException) -> OhlcvError:
    name = type(exc).__name__
    text = _first_line(exc)
    ray_error = _ray_error(exc)
    if ray_error is not None:
        return ray_error
    if _is(exc, "pyiceberg.exceptions", "CommitFailedException"):
        return CommitConflict(f"another writer committed first: {text}")
    if _is(exc, "pyiceberg.exceptions", "CommitStateUnknownException"):
        return TransientError(f"the catalog did not say whether a commit landed: {text}")
    if _is(exc, "pyiceberg.exceptions", "ValidationError", "ResolveError") or _is(exc, "pyspark.errors", "AnalysisException"):
        return SchemaMismatch(f"{name}: {text}")
    if _is(exc, "pyspark.errors", "PythonException"):
        return _classify_spark_python(exc)
    if _is(exc, "py4j.protocol", "Py4JNetworkError"):
        return ServiceUnavailable(f"the Spark gateway went away: {text}")
    if _is(exc, "pyarrow.lib", "ArrowInvalid"):  # bytes that are not what their format says
        return DataFileError(_data_file_message(text, "a data file is corrupt"))
    if isinstance(exc, FileNotFoundError):
        return DataFileError(_data_file_message(f"{text} {exc.filename or ''}", "a data file is missing"))
    if isinstance(exc, PermissionError):
        return ConfigError(f"access denied: {text} (check the storage credentials)")
    if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        return TransientError(f"{name}: {text}")
    if _is(exc, "sqlalchemy.exc", "OperationalError"):  # the catalog database is busy or away
        return TransientError(f"the catalog database: {text}")
    return TerminalError(f"unexpected {name}: {text} (a bug: please report it with `ohlcv --debug`)")


def _unwrapped(exc: BaseException) -> BaseException:
    """The error a Ray task raised, instead of Ray's wrapper. The wrapper is an instance of the
    task's error class too (`RayTaskError(ConfigError)`), with a remote traceback for its text."""
    try:
        import ray.exceptions as rex
    except ImportError:  # pragma: no cover - Ray is a dependency
        return exc
    while isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is None or isinstance(cause, rex.RayError) or cause is exc:
            break
        exc = cause
    return exc


def _ray_error(exc: BaseException) -> OhlcvError | None:
    """Ray's own failures (a worker, actor, node or object lost) are transient. A task's error
    never gets here: `classify` unwrapped it first."""
    try:
        import ray.exceptions as rex
    except ImportError:  # pragma: no cover - Ray is a dependency
        return None
    if isinstance(exc, rex.RayError):
        return TransientError(f"{type(exc).__name__}: {_first_line(exc)[:300]}")
    return None


def _classify_spark_python(exc: BaseException) -> OhlcvError:
    """A Python error inside a Spark task (reading files through Arrow): its type is known only
    as the last line of the worker's traceback, `module.Type: message`."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    raised = next((line for line in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Invalid)\b", line.strip())), "")
    type_name = raised.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    message = raised.split(":", 1)[1].strip() if ":" in raised else raised
    if type_name in ("DataFileError", "ArrowInvalid", "FileNotFoundError"):
        return DataFileError(_data_file_message(message, "a data file could not be read"))
    if type_name in ("OSError", "TimeoutError", "ConnectionError", "IOError"):
        return TransientError(f"a Spark task: {type_name}: {message}")
    return TerminalError(f"a Spark task failed with {type_name or 'an error'}: {message[:300]}")


# ------------------------------------------------------------------------------------------ Java


def _java_throwable(exc: BaseException):
    """The Java exception behind a py4j or PySpark error, or None."""
    java = getattr(exc, "java_exception", None)  # Py4JJavaError
    if java is None:
        java = getattr(exc, "_origin", None)  # PySpark's converted exceptions keep it here
    return java


def _chain(java) -> Iterator[tuple[str, str, list[str]]]:
    """(class name, message, classes of the top stack frames) of a Java exception and its causes."""
    seen = 0
    while java is not None and seen < 20:
        seen += 1
        try:
            frames = [frame.getClassName() for frame in list(java.getStackTrace())[:5]]
            yield java.getClass().getName(), str(java.getMessage() or ""), frames
            java = java.getCause()
        except Exception:  # noqa: BLE001 - the gateway went away mid-walk: what we have must do
            return


def _classify_java(exc: BaseException, java) -> OhlcvError:
    chain = list(_chain(java))
    if not chain:
        return ServiceUnavailable(f"the Spark gateway went away: {_first_line(exc)}")
    messages = " ".join(message for _, message, _ in chain)
    outermost = f"{chain[0][0].rsplit('.', 1)[-1]}: {chain[0][1].splitlines()[0] if chain[0][1] else ''}"[:400]
    for name, message, frames in reversed(chain):  # the root cause first
        if name in JAVA_DATA_FILE_ERRORS or (name in _GENERIC_JAVA and any(f.startswith(_DATA_FILE_READERS) for f in frames)):
            return DataFileError(_data_file_message(messages, f"a data file could not be read ({name.rsplit('.', 1)[-1]})"))
        if name in JAVA_SCHEMA_ERRORS:
            return SchemaMismatch(f"Spark could not read the trades with this schema: {name.rsplit('.', 1)[-1]}: {message[:300]}")
        if name in JAVA_TRANSIENT_ERRORS:
            return TransientError(f"the Spark job failed: {name.rsplit('.', 1)[-1]}: {message.splitlines()[0][:300] if message else ''}")
    if len(chain) == 1 and chain[0][0] == _SPARK_JOB_ABORTED:
        return TransientError(f"the Spark job was aborted: {outermost}")
    root = chain[-1]
    return TerminalError(f"the Spark job failed: unexpected {root[0]}: {root[1].splitlines()[0][:300] if root[1] else ''} (a bug?)")


# ----------------------------------------------------------------------------------------- shared


def _data_file_message(text: str, what: str) -> str:
    found = _DATA_FILE_PATH.search(text or "")
    if found:
        return f"{what}: {found.group(1)} (restore it from a copy, or remove it from the trades table)"
    return f"{what}: {(text or '').strip().splitlines()[0][:300] if text and text.strip() else 'no file named'}"


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:400] if lines else type(exc).__name__


def _is(exc: BaseException, module: str, *names: str) -> bool:
    """`exc` is an instance of one of `names` from `module`, without importing the module."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith(module) and cls.__name__ in names:
            return True
    return False
