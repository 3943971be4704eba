"""Shared fixtures: one real local Ray cluster and one RayDP Spark service per test session,
and a fresh warehouse with a real SQLite Iceberg catalog per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from ohlcv import schema as s
from ohlcv.catalog import ensure_tables, load_table, open_catalog
from ohlcv.settings import Settings

_OUR_VARIABLES = ("OHLCV_", "RAY_ADDRESS")
# A PostgreSQL server for the catalog tests, given by CI; read now, before the isolation below.
POSTGRES_URI = os.environ.get("OHLCV_TEST_POSTGRES_URI")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own settings."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARIABLES):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster with two CPUs, as on the CI machine, with workflow storage."""
    import ray

    storage = tmp_path_factory.mktemp("workflow-storage").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Cluster-wide storage configuration is deprecated")
        ray.init(num_cpus=2, namespace="ohlcv", include_dashboard=False, log_to_driver=False, storage=storage)
    yield ray
    from workflows.spark_service import stop_service

    stop_service()
    ray.shutdown()


@pytest.fixture(scope="session")
def spark(ray_cluster):
    """The warm Spark service every Spark test shares (started once: it takes seconds)."""
    from workflows.spark_service import spark_service

    return spark_service(Settings(warehouse="/nonexistent-unused"))


def _postgres_binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    on_path = shutil.which("initdb")
    return found[0].parent if found else (Path(on_path).parent if on_path else None)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server: OHLCV_TEST_POSTGRES_URI, or a throwaway one on loopback when the
    server is installed (Debian: apt-get install postgresql); otherwise the tests are skipped."""
    if POSTGRES_URI:
        yield POSTGRES_URI.rstrip("/")
        return
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Its own folder: the postgres user cannot enter pytest's (mode 700, owned by root).
    data = Path(tempfile.mkdtemp(prefix="ohlcv-pg-", dir="/tmp"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_owner, str(binaries / "initdb"), "-D", str(data), "-U", "ohlcv", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    subprocess.run([*as_owner, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(data / "log"), "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://ohlcv@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_owner, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_catalog_uri(postgres_server):
    """A fresh, empty database on the PostgreSQL server, dropped after the test."""
    import psycopg

    name = f"ohlcv_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backend(request) -> str:
    """The catalog a test runs on: "sqlite" unless parametrized with "postgres" too."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def settings(tmp_path: Path, backend: str, request) -> Settings:
    """Settings for a fresh warehouse whose tables exist (on the test's catalog backend)."""
    catalog_uri = request.getfixturevalue("postgres_catalog_uri") if backend == "postgres" else None
    result = Settings(warehouse=str(tmp_path / "warehouse"), catalog_uri=catalog_uri)
    ensure_tables(open_catalog(result), result.namespace)
    return result


# Use on a test or module to run it on both catalogs.
BOTH_CATALOGS = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def catalog(settings: Settings):
    return open_catalog(settings)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def trade(exchange: str, symbol: str, trade_id: str, price: float, quantity: float, ts: datetime, side: str | None = None) -> dict:
    return {"exchange": exchange, "symbol": symbol, "trade_id": trade_id, "price": price, "quantity": quantity, "side": side, "timestamp": ts}


def trades_table(rows: list[dict]) -> pa.Table:
    """Rows as the Arrow table a Parquet trades file would hold."""
    return pa.table(
        {
            "exchange": [r["exchange"] for r in rows],
            "symbol": [r["symbol"] for r in rows],
            "trade_id": [r["trade_id"] for r in rows],
            "price": pa.array([r["price"] for r in rows], pa.float64()),
            "quantity": pa.array([r["quantity"] for r in rows], pa.float64()),
            "side": [r.get("side") for r in rows],
            "timestamp": pa.array([r["timestamp"] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def stored_trades(catalog, namespace: str = "market_data") -> list[dict]:
    return load_table(catalog, namespace, s.TRADES_TABLE).scan().to_arrow().to_pylist()


@pytest.fixture
def workflows(ray_cluster):
    """`ray.workflow`, with every run deleted after the test: tick ids are per cluster, and
    each test has its own warehouse, so a stored tick of another test must not be returned."""
    from workflows.runtime import import_workflow
    from workflows import journal

    workflow = import_workflow()
    yield workflow
    for workflow_id, status in workflow.list_all():
        if status.name == "RUNNING":
            workflow.cancel(workflow_id)
        workflow.delete(workflow_id)
        journal.delete_workflow(workflow_id)
