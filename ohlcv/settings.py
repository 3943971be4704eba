"""One typed settings object, merged from an optional TOML file and the environment.

Environment variables win over the file; the file (named by `OHLCV_CONFIG`) wins over the
defaults. `load_settings` is a pure function of its two mappings, so tests pass both in and
never see the developer's own configuration. Resolve settings once, at the edge (CLI, job
entry point), and pass the object down.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ohlcv.errors import ConfigError

__all__ = ["Settings", "load_settings", "from_environment", "read_config_file", "mask_password", "ReadMode", "ENVIRONMENT", "FALLBACK_ENVIRONMENT", "parse_sample_spec"]

ReadMode = Literal["auto", "arrow", "native"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SIZE = re.compile(r"^\d+[kmgt]?$", re.IGNORECASE)

# setting name -> environment variable. The first four are the public contract.
ENVIRONMENT = {
    "warehouse": "OHLCV_WAREHOUSE",
    "catalog_uri": "OHLCV_CATALOG_URI",
    "namespace": "OHLCV_NAMESPACE",
    "ray_address": "RAY_ADDRESS",
    "spark_executors": "OHLCV_SPARK_EXECUTORS",
    "spark_executor_cores": "OHLCV_SPARK_EXECUTOR_CORES",
    "spark_executor_memory": "OHLCV_SPARK_EXECUTOR_MEMORY",
    "spark_driver_memory": "OHLCV_SPARK_DRIVER_MEMORY",
    "spark_placement": "OHLCV_SPARK_PLACEMENT",
    "read_mode": "OHLCV_READ_MODE",
    "workflow_storage": "OHLCV_WORKFLOW_STORAGE",
    "step_retries": "OHLCV_STEP_RETRIES",
    "step_retry_delay": "OHLCV_STEP_RETRY_DELAY",
    "step_timeout": "OHLCV_STEP_TIMEOUT",
    "catchup": "OHLCV_CATCHUP",
    "overlap": "OHLCV_OVERLAP",
    "failpoint_dir": "OHLCV_FAILPOINT_DIR",
    "audit_sample": "OHLCV_AUDIT_SAMPLE",
    "snapshot_days": "OHLCV_SNAPSHOT_DAYS",
    "run_history_days": "OHLCV_RUN_HISTORY_DAYS",
    "upkeep_cron": "OHLCV_UPKEEP_CRON",
    "recompute_limit_days": "OHLCV_RECOMPUTE_LIMIT_DAYS",
    "backfill_chunk_trades": "OHLCV_BACKFILL_CHUNK_TRADES",
    "backfill_concurrency": "OHLCV_BACKFILL_CONCURRENCY",
    "driver_max_trades": "OHLCV_DRIVER_MAX_TRADES",
    "arrow_threads": "OHLCV_ARROW_THREADS",
    "s3_endpoint": "AWS_ENDPOINT_URL_S3",
    "s3_region": "AWS_REGION",
}
# Settings that, like every AWS tool, also read a second, more general variable when the first
# is unset. Credentials are deliberately absent: see ohlcv/object_store.py.
FALLBACK_ENVIRONMENT = {"s3_endpoint": "AWS_ENDPOINT_URL", "s3_region": "AWS_DEFAULT_REGION"}
# setting -> (type, what a value must be, the smallest value allowed)
_NUMBERS = {
    "spark_executors": (int, "a whole number", 1),
    "spark_executor_cores": (int, "a whole number", 1),
    "step_retries": (int, "a whole number", 0),
    "step_retry_delay": (float, "a number of seconds", 0),
    "step_timeout": (float, "a number of seconds", 0),
    "snapshot_days": (float, "a number of days", 0),
    "run_history_days": (float, "a number of days", 0),
    "recompute_limit_days": (float, "a number of days", 0),
    "backfill_chunk_trades": (int, "a whole number of trades", 0),
    "backfill_concurrency": (int, "a whole number of chunks", 0),
    "driver_max_trades": (int, "a whole number of trades", 0),
    "arrow_threads": (int, "a whole number of threads", 0),
}
_CHOICES = {
    "read_mode": ("auto", "arrow", "native"),
    "catchup": ("coalesce", "all", "skip"),
    "overlap": ("skip", "wait"),
}
_PLACEMENTS = ("SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK")


@dataclass(frozen=True)
class Settings:
    """Everything configurable; see README "Settings" for each field."""

    warehouse: str = "./warehouse"
    catalog_uri: str | None = None  # None: a SQLite file inside the warehouse
    namespace: str = "market_data"
    ray_address: str | None = None  # None: start a local Ray on this machine
    spark_executors: int | None = None  # None: sized from the cluster's CPUs
    spark_executor_cores: int | None = None
    spark_executor_memory: str | None = None  # e.g. "2g"; None: sized from the cluster's memory
    spark_driver_memory: str = "1g"
    # Where Ray places the executors (a placement group): SPREAD puts them on different nodes,
    # PACK on as few as possible; None lets Ray choose.
    spark_placement: str | None = None
    # How Spark reads trade files: "native" hands local Parquet paths to Spark's reader,
    # "arrow" reads every file through pyiceberg's FileIO (any object store), "auto" picks
    # native when every planned file is local and has no delete files.
    read_mode: ReadMode = "auto"
    # Ray Workflows storage of a local cluster; None: a `workflow-storage` folder beside the
    # warehouse. A cluster started with `ray start --head --storage=...` brings its own.
    workflow_storage: str | None = None
    # Each workflow step: retried this many times on transient errors, this many seconds
    # apart, each try cancelled after `step_timeout` seconds (the original platform's figures).
    step_retries: int = 2
    step_retry_delay: float = 60.0
    step_timeout: float = 300.0
    # Scheduler: what to do with ticks missed while it was down ("coalesce": only the newest
    # of each timeframe, whose lookback covers the rest; "all"; "skip"), and with a tick that
    # falls due while the previous tick of its timeframe still runs ("skip" or "wait").
    catchup: Literal["coalesce", "all", "skip"] = "coalesce"
    overlap: Literal["skip", "wait"] = "skip"
    # Rows of a run's candles the Pandera model checks: a count ("5000") or a share ("2%");
    # the invariant counts and the reconciliation always cover every candle.
    audit_sample: str = "5000"
    # Upkeep: snapshots older than this many days are expired (time travel reaches that far
    # back), and the daily upkeep workflow (retention, compaction, expiry) runs on this cron.
    snapshot_days: float = 7.0
    # Finished workflow runs (checkpoints and journals) older than this many days are removed by
    # the daily upkeep and `ohlcv workflows prune`; failed ones stay until resolved.
    run_history_days: float = 14.0
    upkeep_cron: str = "45 1 * * *"
    # A tick whose trades snapshot log cannot say which old windows new trades touched (the
    # watermark expired, or trades were removed) recomputes this many days before its lookback.
    recompute_limit_days: float = 7.0
    # A backfill reads and aggregates consecutive days in one Spark pass while their trades
    # (as the manifests count them) stay within this many; a larger day is a chunk of its own.
    # 0: one chunk per day. One chunk's candles are held in memory and checkpointed at once.
    backfill_chunk_trades: int = 5_000_000
    # Chunks of one backfill Spark aggregates at once (their commits still go one after another,
    # in time order). 0: one per 8 Spark slots, 1 to 4 (workflows/orchestration/dags.py).
    backfill_concurrency: int = 0
    # A request for at most this many trades (as the manifests estimate them: a tick's lookback
    # and late windows, a small day or chunk) is computed in the Spark service's driver, in
    # Arrow, with no Spark job (ohlcv/arrow_candles.py). 0: every request goes to Spark.
    # Spark costs about a second per request however few its trades, and below a few million
    # trades that outweighs what its executors add: a day of 2.4M trades, all five timeframes,
    # took a median 1.25 s this way against 2.76 s through Spark (2 cores, through the service,
    # measured). The bound is the driver's memory: about 200 bytes a trade at its peak. Trades
    # that need deduplicating go to Spark past 500k (arrow_candles.DEDUPLICATED_MAX_ROWS).
    driver_max_trades: int = 3_000_000
    # Threads Arrow reads and writes Parquet with in each step and in the Spark service's driver
    # (workflows.runtime.use_arrow_threads). 0: every core of the node the process runs on.
    arrow_threads: int = 0
    # S3-compatible object storage (AWS_ENDPOINT_URL[_S3], AWS_REGION / AWS_DEFAULT_REGION):
    # None means AWS itself. Keys are never settings: each process reads its own environment.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Tests only: a folder where armed failpoints live (workflows/orchestration/failpoints.py). None: inert.
    failpoint_dir: str | None = None

    @property
    def warehouse_is_local(self) -> bool:
        scheme = urlsplit(self.warehouse).scheme
        return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive

    @property
    def warehouse_path(self) -> Path:
        """The warehouse as a local folder; only meaningful when `warehouse_is_local`."""
        parts = urlsplit(self.warehouse)
        raw = parts.path if parts.scheme == "file" else self.warehouse
        return Path(raw).expanduser().resolve()

    @property
    def warehouse_uri(self) -> str:
        return self.warehouse_path.as_uri() if self.warehouse_is_local else self.warehouse

    @property
    def resolved_workflow_storage(self) -> str:
        """Where Ray Workflows keeps checkpoints and the run journal: the setting, or a
        `workflow-storage` folder (or prefix, in the same bucket) beside the warehouse."""
        if self.workflow_storage:
            scheme = urlsplit(self.workflow_storage).scheme
            return self.workflow_storage if scheme and len(scheme) > 1 else Path(self.workflow_storage).resolve().as_uri()
        if self.warehouse_is_local:
            return (self.warehouse_path.parent / "workflow-storage").as_uri()
        parts = urlsplit(self.warehouse)
        if parts.scheme not in ("s3", "s3a"):
            raise ConfigError("set OHLCV_WORKFLOW_STORAGE: Ray's workflow storage cannot live beside this warehouse")
        parent = parts.path.rstrip("/").rsplit("/", 1)[0]
        return f"{parts.scheme}://{parts.netloc}{parent}/workflow-storage"

    @property
    def ray_storage_uri(self) -> str:
        """The workflow storage as Ray takes it: with the S3 endpoint and region for pyarrow."""
        from ohlcv.object_store import ray_storage_uri

        return ray_storage_uri(self.resolved_workflow_storage, self.s3_endpoint, self.s3_region)

    def fileio_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties for the warehouse; credentials from this process's environment."""
        from ohlcv.object_store import fileio_properties

        return fileio_properties(self.s3_endpoint, self.s3_region)

    @property
    def resolved_catalog_uri(self) -> str:
        if self.catalog_uri:
            return self.catalog_uri
        return f"sqlite:///{self.warehouse_path / 'catalog.db'}"

    @property
    def masked_catalog_uri(self) -> str:
        """The catalog URI fit for logs and screens: any password replaced by ***."""
        return mask_password(self.resolved_catalog_uri)

    def with_overrides(self, **changes: Any) -> "Settings":
        return _validated(replace(self, **changes))


def mask_password(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _coerce(name: str, raw: Any) -> Any:
    if raw is None or raw == "":
        return None
    if name not in _NUMBERS:
        return str(raw)
    kind, what, least = _NUMBERS[name]
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{ENVIRONMENT[name]} must be {what}, got {raw!r}") from None
    if value < least:
        raise ConfigError(f"{ENVIRONMENT[name]} must be at least {least}, got {value}")
    return value


def parse_sample_spec(spec: str) -> tuple[int | None, float | None]:
    """'5000' -> at most 5000 rows; '2%' -> 2 percent of the rows (at least one)."""
    text = spec.strip()
    percent = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if percent and 0 < float(percent[1]) <= 100:
        return None, float(percent[1]) / 100
    if text.isdigit() and int(text) > 0:
        return int(text), None
    raise ConfigError(f"OHLCV_AUDIT_SAMPLE must be a row count (5000) or a percentage (2%), got {spec!r}")


def _validated(settings: Settings) -> Settings:
    if not _NAME.match(settings.namespace):
        raise ConfigError(
            f"OHLCV_NAMESPACE {settings.namespace!r} is not a valid name: use letters, digits and _, "
            "starting with a letter or _"
        )
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            raise ConfigError(f"{ENVIRONMENT[name]} must be {', '.join(choices[:-1])} or {choices[-1]}, got {getattr(settings, name)!r}")
    if settings.spark_placement is not None and settings.spark_placement not in _PLACEMENTS:
        raise ConfigError(f"OHLCV_SPARK_PLACEMENT must be one of {', '.join(_PLACEMENTS)}, got {settings.spark_placement!r}")
    parse_sample_spec(settings.audit_sample)
    from croniter import croniter

    if not croniter.is_valid(settings.upkeep_cron):
        raise ConfigError(f"OHLCV_UPKEEP_CRON {settings.upkeep_cron!r} is not a cron expression")
    if settings.step_timeout <= 0:
        raise ConfigError("OHLCV_STEP_TIMEOUT must be more than 0 seconds")
    for name in ("spark_executor_memory", "spark_driver_memory"):
        value = getattr(settings, name)
        if value is not None and not _SIZE.match(value):
            raise ConfigError(f"{ENVIRONMENT[name]} must look like 512m or 2g, got {value!r}")
    if settings.s3_endpoint is not None and urlsplit(settings.s3_endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"AWS_ENDPOINT_URL {settings.s3_endpoint!r} must start with http:// or https://")
    if not settings.warehouse_is_local and not settings.catalog_uri:
        raise ConfigError(
            f"OHLCV_WAREHOUSE {settings.warehouse!r} is remote: set OHLCV_CATALOG_URI too "
            "(the embedded SQLite catalog lives inside a local warehouse)"
        )
    return settings


def load_settings(env: Mapping[str, str], file_values: Mapping[str, Any] | None = None) -> Settings:
    """Merge defaults < file values < environment into a validated Settings (pure)."""
    known = {f.name for f in fields(Settings)}
    merged: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in the config file; known: {', '.join(sorted(known))}")
        merged[key] = _coerce(key, value) if key in ENVIRONMENT else value
    for name, variable in ENVIRONMENT.items():
        fallback = FALLBACK_ENVIRONMENT.get(name)
        if env.get(variable):
            merged[name] = _coerce(name, env[variable])
        elif fallback and env.get(fallback):
            merged[name] = _coerce(name, env[fallback])
    merged = {k: v for k, v in merged.items() if v is not None}
    return _validated(Settings(**merged))


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"OHLCV_CONFIG names {str(path)!r}, which does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return data.get("ohlcv", data)


def from_environment(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for this process: the edge calls this once."""
    env = os.environ if env is None else env
    file_values = read_config_file(env["OHLCV_CONFIG"]) if env.get("OHLCV_CONFIG") else None
    return load_settings(env, file_values)
