"""Shared fixtures: one real local Ray cluster and one RayDP Spark service per test session,
and a fresh warehouse with a real SQLite Iceberg catalog per test."""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from ohlcv import schema as s
from ohlcv.catalog import ensure_tables, load_table, open_catalog
from ohlcv.settings import Settings

_OUR_VARIABLES = ("OHLCV_", "RAY_ADDRESS")


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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh warehouse whose tables exist."""
    result = Settings(warehouse=str(tmp_path / "warehouse"))
    ensure_tables(open_catalog(result), result.namespace)
    return result


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
