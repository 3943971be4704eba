"""Table creation (idempotent, exact partition specs), schema checks, Java detection, executor sizing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from ohlcv import schema as s
from ohlcv.catalog import ensure_tables, load_table, open_catalog
from ohlcv.errors import ConfigError, SchemaMismatch
from ohlcv.settings import Settings
from workflows.spark.java import require_java
from workflows.spark.native_copies import (
    LIBRARY_NAME, LIBRARY_ROOT, ORPHAN_AGE, Pruned, mapped_copies, prune_native_copies,
)
from workflows.spark.sizing import plan_sizing

GIB = 1024**3


def test_init_creates_every_table_with_its_partitioning_and_is_idempotent(tmp_path):
    settings = Settings(warehouse=str(tmp_path / "wh"))
    catalog = open_catalog(settings)
    first = ensure_tables(catalog, "market_data")
    assert [name for name, created in first if created] == [
        "gold_crypto_trades", "quarantine_trades", "trade_id_ranges", "gold_ohlcv_1m", "gold_ohlcv_5m", "gold_ohlcv_30m", "gold_ohlcv_1h", "gold_ohlcv_1d"]
    assert not any(created for _, created in ensure_tables(catalog, "market_data"))

    def partitioning(name):
        table = load_table(catalog, "market_data", name)
        return [(table.schema().find_field(f.source_id).name, str(f.transform)) for f in table.spec().fields]

    assert partitioning("gold_crypto_trades") == [("timestamp", "day")]
    assert partitioning("gold_ohlcv_1h") == [("window_start", "day")]
    assert partitioning("gold_ohlcv_1d") == [("window_start", "month")]
    candles = load_table(catalog, "market_data", "gold_ohlcv_5m").schema()
    assert [f.name for f in candles.fields] == [
        "symbol", "exchange", "window_start", "window_end", "window_date", "open_price", "high_price", "low_price",
        "close_price", "volume", "trade_count", "vwap", "created_at", "updated_at"]
    assert {candles.find_field(i).name for i in candles.identifier_field_ids} == {"exchange", "symbol", "window_start"}
    assert str(candles.find_field("window_start").field_type) == "timestamptz"


def test_a_foreign_table_under_our_name_is_reported(tmp_path):
    catalog = open_catalog(Settings(warehouse=str(tmp_path / "wh")))
    catalog.create_namespace("market_data")
    catalog.create_table(("market_data", s.TRADES_TABLE), schema=Schema(NestedField(1, "exchange", StringType())))
    with pytest.raises(SchemaMismatch, match="missing columns symbol, trade_id"):
        ensure_tables(catalog, "market_data")


def test_missing_java_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Java was not found.*openjdk-17-jre-headless"):
        require_java()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "1.8.0_392"\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="found Java 8"):
        require_java()


def test_executors_are_sized_from_the_cluster():
    two_cores = plan_sizing(Settings(), 2, 16 * GIB)
    assert (two_cores.executors, two_cores.executor_cores, two_cores.executor_memory) == (1, 2, "2048m")
    big = plan_sizing(Settings(), 16, 64 * GIB)
    assert (big.executors, big.executor_cores, big.slots) == (4, 4, 16)
    small_memory = plan_sizing(Settings(), 4, 2 * GIB)
    assert small_memory.executor_memory == "1024m"
    fixed = plan_sizing(Settings(spark_executors=3, spark_executor_cores=1, spark_executor_memory="3g"), 2, 16 * GIB)
    assert (fixed.executors, fixed.executor_cores, fixed.executor_memory) == (3, 1, "3g")


def _java_library_copy(folder, name: str, age: float, now: float):
    copy = folder / name
    copy.mkdir(parents=True)
    (copy / LIBRARY_NAME).write_bytes(b"\0" * 1000)
    (copy / "file_lock").touch()
    os.utime(copy, (now - age, now - age))
    return copy


def test_library_copies_go_once_loaded_or_orphaned_and_nothing_else_is_touched(tmp_path):
    now = time.time()
    root = tmp_path / "ray"
    loaded = _java_library_copy(root, "1795831464506", 5, now)
    orphaned = _java_library_copy(root, "1795831464507", ORPHAN_AGE + 60, now)
    loading = _java_library_copy(root, "1795831464508", 5, now)  # copied, not yet mapped
    session = _java_library_copy(root, "session_2026-11-28_08-29-26_796576_18918", ORPHAN_AGE * 5, now)
    (root / "1795831464509").mkdir()  # a digits folder without the library
    proc = tmp_path / "proc"
    for pid, comm, path in [
        ("100", "java", f"{loaded}/{LIBRARY_NAME}"),
        ("101", "java", f"{orphaned}/{LIBRARY_NAME} (deleted)"),  # no longer a name on disk
        ("102", "python3", f"{loading}/{LIBRARY_NAME}"),  # only JVMs load it
    ]:
        (proc / pid).mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
        (proc / pid / "maps").write_text(
            "7f0000000000-7f0000001000 r--p 00000000 00:00 0 \n"
            f"7f0000001000-7f0000002000 r-xp 00001000 fd:00 123 {path}\n"
        )
    (proc / "self").mkdir()

    mapped = mapped_copies(proc, root)
    assert mapped == {loaded}
    pruned = prune_native_copies(root, now, mapped)

    assert pruned == Pruned(folders=2, bytes=2000)
    assert not loaded.exists() and not orphaned.exists()
    assert loading.exists() and session.exists() and (root / "1795831464509").exists()
    assert prune_native_copies(tmp_path / "absent", now, set()) == Pruned(0, 0)


@pytest.mark.slow
def test_the_service_deletes_the_library_copy_its_spark_driver_loaded(ray_cluster, spark):
    import psutil

    info = ray_cluster.get(spark.info.remote())
    # No count of what this start removed: the other xdist worker's service, started at the same
    # moment, may have deleted this one's copies first (any loaded copy may go, whoever loaded
    # it). What must hold is below: every copy these JVMs loaded is gone from disk.
    assert info["active_jobs"] == 0  # no request is running
    jvms = [child for child in psutil.Process(info["pid"]).children(recursive=True) if child.name() == "java"]
    assert jvms, "the Spark driver JVM is a child of the service"
    loaded = [
        line.split(maxsplit=5)[5]
        for jvm in jvms for line in Path(f"/proc/{jvm.pid}/maps").read_text().splitlines()
        if LIBRARY_NAME in line
    ]
    assert loaded and all(path.startswith(f"{LIBRARY_ROOT}/") and path.endswith(" (deleted)") for path in loaded)


@pytest.mark.slow
def test_the_service_gives_arrow_the_threads_the_settings_name(ray_cluster, spark, settings, catalog):
    """The service is a CPU-less actor, so Ray left its Arrow one thread; each request sets the
    count its settings name (every core by default), for the reads it does in its driver."""
    from datetime import datetime, timezone

    ensure_tables(catalog, settings.namespace)
    hour = [(datetime(2024, 3, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, 1, tzinfo=timezone.utc))]
    try:
        ray_cluster.get(spark.aggregate.remote(settings.with_overrides(arrow_threads=1), ["1m"], hour))
        assert ray_cluster.get(spark.info.remote())["arrow_threads"] == 1
    finally:  # the service is shared by every Spark test: leave it with the default
        ray_cluster.get(spark.aggregate.remote(settings, ["1m"], hour))
    assert ray_cluster.get(spark.info.remote())["arrow_threads"] == len(os.sched_getaffinity(0))
