"""Failure kinds by type: one test per kind of the mapping in workflows.orchestration.failure_kinds,
then real Spark errors from real files, and a truncated trades file failing a tick at once."""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa
import pytest

from ohlcv import timeframes
from ohlcv.catalog import load_trades
from ohlcv.errors import (
    CommitConflict,
    ConfigError,
    DataFileError,
    RunFailed,
    SchemaMismatch,
    ServiceUnavailable,
    TerminalError,
    TransientError,
)
from support import AS_OF
from workflows.orchestration import failure_kinds, ids, journal, runs

classify = failure_kinds.classify


# ------------------------------------------------------------------------------ Python exceptions


def _commit_failed():
    from pyiceberg.exceptions import CommitFailedException

    return CommitFailedException("Requirement failed: branch main has changed")


def _iceberg_validation():
    from pyiceberg.exceptions import ValidationError

    return ValidationError("Mismatch in fields: price is required")


def _arrow_invalid():
    return pa.ArrowInvalid("Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.")


def _py4j_network():
    from py4j.protocol import Py4JNetworkError

    return Py4JNetworkError("Answer from Java side is empty")


def _sqlite_locked():
    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE iceberg_tables", {}, Exception("database is locked"))


@pytest.mark.parametrize(
    ("make", "kind", "transient"),
    [
        (_commit_failed, CommitConflict, True),
        (lambda: TimeoutError("timed out reading s3://b/k"), TransientError, True),
        (lambda: ConnectionResetError("connection reset by peer"), TransientError, True),
        (lambda: socket.timeout("read timed out"), TransientError, True),
        (lambda: OSError("When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION"), TransientError, True),
        (_py4j_network, ServiceUnavailable, True),
        (_sqlite_locked, TransientError, True),
        (_iceberg_validation, SchemaMismatch, False),
        (_arrow_invalid, DataFileError, False),
        (lambda: FileNotFoundError(2, "No such file", "/w/trades/data/00000-0-x.parquet"), DataFileError, False),
        (lambda: PermissionError(13, "Access Denied"), ConfigError, False),
        (lambda: TypeError("unsupported operand type(s) for +: 'int' and 'str'"), TerminalError, False),
        (lambda: KeyError("close_price"), TerminalError, False),
        (lambda: ZeroDivisionError("division by zero"), TerminalError, False),
    ],
    ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None,
)
def test_python_exceptions_map_by_type(make, kind, transient):
    error = classify(make())
    assert isinstance(error, kind), (type(error), error)
    assert isinstance(error, TransientError) is transient
    assert isinstance(error, TerminalError) is not transient
    assert "\n" not in str(error)


def test_a_missing_file_and_a_bug_say_which():
    missing = classify(FileNotFoundError(2, "No such file or directory", "/w/trades/data/00000-0-x.parquet"))
    assert "/w/trades/data/00000-0-x.parquet" in str(missing) and "missing" in str(missing)
    bug = classify(TypeError("bad operand"))
    assert str(bug).startswith("unexpected TypeError: bad operand")


def test_platform_errors_keep_their_own_kind():
    for error in (CommitConflict("x"), ConfigError("y"), RunFailed("z")):
        assert classify(error) is error


def test_ray_errors_are_the_task_s_own_error_or_a_lost_worker():
    import ray.exceptions as rex

    wrapped = rex.RayTaskError("step", "Traceback ...", ValueError("a bug in the step"))
    assert isinstance(classify(wrapped), TerminalError)
    assert isinstance(classify(rex.RayTaskError("step", "tb", _commit_failed())), CommitConflict)
    assert isinstance(classify(rex.WorkerCrashedError()), TransientError)
    assert isinstance(classify(rex.ActorDiedError()), TransientError)
    assert isinstance(classify(rex.NodeDiedError("the node running the step died")), TransientError)


def test_a_spark_task_s_python_error_maps_by_the_type_its_traceback_names():
    from pyspark.errors import PythonException

    corrupt = PythonException(
        "An exception was thrown from the Python worker. Please see the stack trace below.\n"
        "Traceback (most recent call last):\n  File \"store.py\", line 3, in read_files\n"
        "ohlcv.errors.DataFileError: s3://bucket/warehouse/trades/data/day=2024-05-01/00000-1-a.parquet: ArrowInvalid: magic bytes\n"
    )
    error = classify(corrupt)
    assert isinstance(error, DataFileError)
    assert "s3://bucket/warehouse/trades/data/day=2024-05-01/00000-1-a.parquet" in str(error)
    slow = PythonException("Traceback (most recent call last):\nOSError: AWS Error NETWORK_CONNECTION during GetObject\n")
    assert isinstance(classify(slow), TransientError)
    bug = PythonException("Traceback (most recent call last):\nKeyError: 'timestamp'\n")
    assert isinstance(classify(bug), TerminalError) and not isinstance(classify(bug), DataFileError)


# -------------------------------------------------- Java exception chains (the shape py4j presents)


class _JavaClass:
    def __init__(self, name: str) -> None:
        self._name = name

    def getName(self) -> str:  # noqa: N802 - Java's name
        return self._name


class _Frame:
    def __init__(self, cls: str) -> None:
        self._cls = cls

    def getClassName(self) -> str:  # noqa: N802
        return self._cls


class _Throwable:
    """A Java exception as py4j shows it: class, message, cause, stack trace."""

    def __init__(self, cls: str, message: str, cause=None, frames=("org.apache.spark.scheduler.DAGScheduler",)) -> None:
        self._cls, self._message, self._cause, self._frames = cls, message, cause, frames

    def getClass(self):  # noqa: N802
        return _JavaClass(self._cls)

    def getMessage(self):  # noqa: N802
        return self._message

    def getCause(self):  # noqa: N802
        return self._cause

    def getStackTrace(self):  # noqa: N802
        return [_Frame(f) for f in self._frames]


class _Py4JError(Exception):
    def __init__(self, java) -> None:
        super().__init__("An error occurred while calling o123.collectAsArrowToPython.")
        self.java_exception = java


def _job_aborted(cause=None):
    return _Py4JError(_Throwable("org.apache.spark.SparkException", "Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times", cause))


FILE = "file:/w/market_data/trades/data/trade_day=2024-05-01/00000-3-c.parquet"


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (_Throwable("java.lang.RuntimeException", f"{FILE} is not a Parquet file. Expected magic number at tail, but found [1, 2, 3, 4]",
                    frames=("org.apache.parquet.hadoop.ParquetFileReader", "org.apache.parquet.hadoop.ParquetFileReader")), DataFileError),
        (_Throwable("org.apache.parquet.io.ParquetDecodingException", f"Can not read value at 0 in block -1 in file {FILE}"), DataFileError),
        (_Throwable("java.io.FileNotFoundException", f"File {FILE} does not exist"), DataFileError),
        (_Throwable("java.io.EOFException", "Reached the end of stream with 51 bytes left to read"), DataFileError),
        (_Throwable("org.apache.spark.sql.execution.datasources.SchemaColumnConvertNotSupportedException", "column: [price]"), SchemaMismatch),
        (_Throwable("org.apache.spark.shuffle.FetchFailedException", "Failed to connect to 10.0.0.7:41231"), TransientError),
        (_Throwable("java.net.SocketTimeoutException", "Read timed out"), TransientError),
        (_Throwable("java.lang.NullPointerException", "Cannot invoke \"Object.toString()\""), TerminalError),
        (_Throwable("java.lang.RuntimeException", "something else", frames=("org.apache.spark.sql.catalyst.expressions.Cast",)), TerminalError),
    ],
    ids=lambda v: v._cls.rsplit(".", 1)[-1] if isinstance(v, _Throwable) else getattr(v, "__name__", None),
)
def test_spark_failures_map_by_the_java_classes_of_their_causes(cause, kind):
    wrapped = _Throwable("org.apache.spark.SparkException", f"Encountered error while reading file {FILE}. Details:", cause)
    error = classify(_job_aborted(wrapped))
    assert type(error) is kind or (kind in (TransientError, TerminalError) and isinstance(error, kind)), (type(error), error)
    if kind is DataFileError:
        assert FILE in str(error)  # named, so that someone can restore or remove it


def test_a_job_aborted_with_no_cause_is_lost_executors_and_transient():
    error = classify(_job_aborted())
    assert isinstance(error, TransientError) and "aborted" in str(error)


# ----------------------------------------------------------- a real truncated file, a real tick


@pytest.mark.slow
def test_a_truncated_trades_file_fails_the_tick_at_once_naming_the_file(fast, catalog, workflows, day_of_trades):
    """Spark reads the day's file natively: its Java error is terminal (one try, no retry delay
    burnt) and the run's error names the file, which is what someone must restore."""
    tf = timeframes.get("1h")
    files = [Path(task.file.file_path.removeprefix("file://").removeprefix("file:"))
             for task in load_trades(catalog, fast.namespace).scan().plan_files()]
    for path in files:  # every day's file cut short: whichever the tick reads first
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(RunFailed) as failure:
        runs.run_tick(fast.with_overrides(step_retry_delay=30.0), tf, AS_OF["1h"])

    message = str(failure.value)
    assert any(path.name in message for path in files) and "step aggregate failed" in message, message
    attempts = journal.read_step(ids.tick_workflow_id(tf, AS_OF["1h"]), "aggregate")["attempts"]
    assert [a["outcome"] for a in attempts] == ["terminal"]
