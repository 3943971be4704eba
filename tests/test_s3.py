"""The platform on a real S3 endpoint (moto's server on loopback), configured by AWS_* alone.

The pipeline against the oracle, retention and upkeep (unreferenced files found by listing the
prefix), the one-line errors of bad storage, and the whole CLI flow with the warehouse and the
workflow storage in a bucket and nothing on local disk. The multi-node tests (test_multinode.py)
and the cluster-restart test (test_cluster.py) run on S3 too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from oracle import compare, expected_candles
from ohlcv import object_store, schema as s, store, timeframes
from ohlcv.catalog import load_candles, load_table, load_trades, open_catalog
from ohlcv.retention import apply_retention, partitions
from ohlcv.settings import from_environment
from ohlcv.store import commit_candles, plan_trade_files, timestamps_in
from ohlcv.upkeep import compact, compact_days, expire_snapshots, referenced_files, remove_unreferenced
from ohlcv.windows import WindowRange, plan_backfill
from support import (
    ALL,
    NOW,
    S3_KEYS,
    crafted_trades,
    daily_candles,
    free_port,
    ingest_rows,
    key_rows,
    make_bucket,
    ohlcv,
    run_chunks,
    start_s3_server,
    stored_trades,
    trade,
    utc,
)

SECRET = S3_KEYS["AWS_SECRET_ACCESS_KEY"]
BIN = Path(os.sys.executable).parent


def bucket_files(settings, uri: str) -> list[str]:
    filesystem, root = object_store.filesystem(uri, settings.fileio_properties())
    listing = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(info.path for info in listing if info.type == pafs.FileType.File)


# ----------------------------------------------------------------------------- settings (pure)


def test_aws_variables_become_settings_and_keys_never_do():
    env = {"OHLCV_WAREHOUSE": "s3://wh-bucket/tables", "OHLCV_CATALOG_URI": "sqlite:////tmp/c.db",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1", **S3_KEYS}
    settings = from_environment(env)
    assert (settings.s3_endpoint, settings.s3_region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert SECRET not in repr(settings)  # settings travel into workflow checkpoints: no key in them
    # The more specific variables win, as in every AWS tool.
    specific = from_environment({**env, "AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_REGION": "us-west-2"})
    assert (specific.s3_endpoint, specific.s3_region) == ("http://minio:9000", "us-west-2")
    # Workflow storage defaults to a prefix beside the warehouse, in the same bucket.
    assert settings.resolved_workflow_storage == "s3://wh-bucket/workflow-storage"
    assert settings.ray_storage_uri == (
        "s3://wh-bucket/workflow-storage?endpoint_override=127.0.0.1%3A9000&scheme=http&region=eu-west-1"
    )
    properties = object_store.fileio_properties(settings.s3_endpoint, settings.s3_region, env)
    assert properties["s3.endpoint"] == "http://127.0.0.1:9000" and properties["s3.region"] == "eu-west-1"
    assert properties["s3.secret-access-key"] == SECRET  # from the process's environment, at use
    # No keys in the environment: the AWS default chain (profile, instance profile) applies.
    assert "s3.access-key-id" not in object_store.fileio_properties(None, None, {})
    # Without an endpoint, a region-less setup lets pyiceberg ask AWS; with one, a default region spares that.
    assert "s3.region" not in object_store.fileio_properties(None, None, {})
    assert object_store.fileio_properties("http://x:1", None, {})["s3.region"] == "us-east-1"


def test_an_endpoint_without_a_scheme_is_refused_with_one_line():
    from ohlcv.errors import ConfigError

    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        from_environment({"AWS_ENDPOINT_URL": "127.0.0.1:9000"})


# ----------------------------------------------------------------------- tables, no Spark needed


def test_ingest_and_candle_commits_land_in_the_bucket_and_nowhere_else(s3_settings, tmp_path):
    catalog = open_catalog(s3_settings)
    rows = [trade("binance", "BTC-USDT", str(i), 100.0 + i, 1.0, utc(2024, 5, 1, 0, i)) for i in range(5)]
    report = ingest_rows(s3_settings, catalog, rows, tmp_path, "five", utc(2024, 5, 2))
    assert report.ingested == 5
    assert len(stored_trades(catalog)) == 5
    files = bucket_files(s3_settings, s3_settings.warehouse_uri)
    assert any("/gold_crypto_trades/data/" in f and f.endswith(".parquet") for f in files)
    assert load_trades(catalog, s3_settings.namespace).location().startswith(f"{s3_settings.warehouse_uri}/")
    # Locally there is the input file and the catalog database, and no table file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.db", "five.parquet"]
    # A tick plan's read of the trades' timestamps (ohlcv/late.py) goes through pyiceberg's FileIO here.
    table = load_trades(catalog, s3_settings.namespace)
    ranges = [WindowRange(utc(2024, 5, 1, 0, 1), utc(2024, 5, 1, 0, 3)), WindowRange(utc(2024, 5, 1, 0, 4), utc(2024, 5, 1, 0, 9))]
    assert sorted(timestamps_in(table, plan_trade_files(table, ranges), ranges).to_pylist()) == [
        utc(2024, 5, 1, 0, 1), utc(2024, 5, 1, 0, 2), utc(2024, 5, 1, 0, 4)]


def test_trade_compaction_on_s3_rewrites_a_day_of_several_files_as_one(s3_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SMALL_FILE_ROWS", 0)  # ingest merges no small file: the upkeep's work here
    catalog = open_catalog(s3_settings)
    for batch in range(3):  # three ingests into one day: three files
        rows = [trade("binance", "BTC-USDT", f"{batch}-{i}", 100.0 + i, 1.0, utc(2024, 5, 1, i, batch)) for i in range(4)]
        ingest_rows(s3_settings, catalog, rows, tmp_path, f"batch-{batch}", utc(2024, 5, 2, batch))
    before = sorted(stored_trades(catalog), key=lambda r: r["trade_id"])
    table = load_trades(catalog, s3_settings.namespace)
    result = compact_days(table, "timestamp", utc(2024, 5, 3))
    assert (result.partitions, result.files_before, result.files_after) == (1, 3, 1)
    assert sorted(stored_trades(catalog), key=lambda r: r["trade_id"]) == before


def test_ingest_on_s3_merges_the_small_files_of_a_day(s3_settings, tmp_path):
    catalog = open_catalog(s3_settings)
    for batch in range(3):  # three ingests into one day: one file, merged on the bucket
        rows = [trade("binance", "BTC-USDT", f"{batch}-{i}", 100.0 + i, 1.0, utc(2024, 5, 1, i, batch)) for i in range(4)]
        ingest_rows(s3_settings, catalog, rows, tmp_path, f"batch-{batch}", utc(2024, 5, 2, batch))
    table = load_trades(catalog, s3_settings.namespace)
    assert [(p.files, p.rows) for p in partitions(table)] == [(1, 12)]
    assert sorted(r["trade_id"] for r in stored_trades(catalog)) == sorted(f"{b}-{i}" for b in range(3) for i in range(4))


def test_retention_and_upkeep_on_s3_keep_every_live_file_and_remove_the_rest(s3_settings):
    tf = timeframes.get("1m")
    table = load_candles(open_catalog(s3_settings), s3_settings.namespace, tf)
    first = utc(2024, 3, 22)
    noon = daily_candles(tf, first, 12).to_pylist()
    morning = [{**row, "window_start": row["window_start"] - timedelta(hours=6), "window_end": row["window_end"] - timedelta(hours=6)}
               for row in noon]
    schema = daily_candles(tf, first, 1).schema
    for day in range(12):  # two commits a day: two small files in each day's partition
        start = first + timedelta(days=day)
        commit_candles(table, pa.Table.from_pylist([morning[day]], schema), WindowRange(start, start + timedelta(hours=9)), utc(2024, 7, 1))
        commit_candles(table, pa.Table.from_pylist([noon[day]], schema), WindowRange(start + timedelta(hours=9), start + timedelta(days=1)),
                       utc(2024, 7, 1))
    before = key_rows(table)

    # Retention at an as-of 90 days after the 25th keeps the partitions from the 25th on.
    dropped = apply_retention(table, tf, utc(2024, 6, 23, 13))
    table.refresh()
    assert [p.start for p in dropped.partitions] == [first + timedelta(days=d) for d in range(3)]
    assert min(p.start for p in partitions(table)) == utc(2024, 3, 25)
    kept = {row for row in before if dict(row)["window_start"] >= utc(2024, 3, 25)}
    assert key_rows(table) == kept

    compacted = compact(table, tf, utc(2024, 7, 1))
    assert compacted.files_before > compacted.files_after
    # An unreferenced file that a crashed writer left, old enough to go.
    filesystem, root = object_store.filesystem(table.location(), table.io.properties)
    orphan = f"{root}/data/window_start_day=2024-03-30/crashed-writer.parquet"
    with filesystem.open_output_stream(orphan) as stream:
        stream.write(b"not a real parquet file")
    expired = expire_snapshots(table, utc(2100, 1, 1))
    assert expired > 0
    remaining = [s.snapshot_id for s in table.metadata.snapshots]
    rows_by_snapshot = {sid: key_rows_at(table, sid) for sid in remaining}

    result = remove_unreferenced(table, grace=timedelta(0))
    assert result.deleted > 1  # the orphan and the files of the expired snapshots
    left = set(bucket_files(s3_settings, table.location()))  # bucket/key, as referenced_files spells them
    assert orphan not in left
    assert left == referenced_files(table)  # exactly what the table still needs is left
    table.refresh()
    assert key_rows(table) == kept
    assert {sid: key_rows_at(table, sid) for sid in remaining} == rows_by_snapshot  # time travel still works


def key_rows_at(table, snapshot_id: int) -> set:
    return {tuple(sorted(r.items())) for r in table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()}


# --------------------------------------------------------------------------------- bad storage


def one_line_error(capsys, env: dict[str, str], monkeypatch, *args: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = ohlcv(capsys, *args)
    assert code == 1, out + err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    assert SECRET not in out + err
    return err


def test_a_missing_bucket_is_one_line_that_names_it_and_nothing_is_written(capsys, monkeypatch, s3_environment, tmp_path):
    env = {"OHLCV_WAREHOUSE": "s3://no-such-bucket/warehouse", "OHLCV_CATALOG_URI": f"sqlite:///{tmp_path / 'c.db'}"}
    err = one_line_error(capsys, env, monkeypatch, "init")
    assert "bucket 'no-such-bucket' does not exist" in err and "OHLCV_WAREHOUSE" in err
    assert not (tmp_path / "c.db").exists()  # the catalog was never opened


def test_an_unreachable_endpoint_is_one_line_and_fails_fast(capsys, monkeypatch, s3_environment, tmp_path):
    env = {"OHLCV_WAREHOUSE": f"s3://{s3_environment['BUCKET']}/warehouse", "OHLCV_CATALOG_URI": f"sqlite:///{tmp_path / 'c.db'}",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    err = one_line_error(capsys, env, monkeypatch, "candles", "--symbol", "BTC-USDT", "--timeframe", "1h")
    assert "cannot reach the endpoint http://127.0.0.1:" in err and s3_environment["BUCKET"] in err
    assert time.monotonic() - started < 30  # one try with short timeouts, not pyarrow's retries


@pytest.fixture(scope="module")
def s3_with_auth():
    """A second moto server that checks signatures and policies: an admin and a read-only user."""
    import boto3

    server, url = start_s3_server()
    try:
        boot = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot")
        make_bucket(url, "guarded", {"AWS_ACCESS_KEY_ID": "boot", "AWS_SECRET_ACCESS_KEY": "boot"})
        iam = boto3.client("iam", **boot)
        users = {}
        for user, actions in (("admin", ["s3:*"]), ("reader", ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"])):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            users[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        # From here on moto authenticates every request (signature and IAM policy).
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"})).read()
        yield url, users
    finally:
        server.terminate()
        server.wait(10)


def test_wrong_keys_and_a_read_only_prefix_are_one_line_each(capsys, monkeypatch, s3_with_auth, tmp_path):
    url, users = s3_with_auth
    base = {"OHLCV_WAREHOUSE": "s3://guarded/warehouse", "AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1"}
    secret = users["admin"]["AWS_SECRET_ACCESS_KEY"]
    wrong = {**users["admin"], "AWS_SECRET_ACCESS_KEY": ("y" if secret[0] == "x" else "x") + secret[1:]}  # never the right one
    err = one_line_error(capsys, {**base, **wrong, "OHLCV_CATALOG_URI": f"sqlite:///{tmp_path / 'a.db'}"}, monkeypatch, "init")
    assert "access to bucket 'guarded'" in err and "AWS_SECRET_ACCESS_KEY" in err
    assert wrong["AWS_SECRET_ACCESS_KEY"] not in err and wrong["AWS_ACCESS_KEY_ID"] not in err
    assert not (tmp_path / "a.db").exists()

    # The reader may list and read, not write: init refuses before creating any table.
    reader = {**base, **users["reader"], "OHLCV_CATALOG_URI": f"sqlite:///{tmp_path / 'b.db'}"}
    err = one_line_error(capsys, reader, monkeypatch, "init")
    assert "access to bucket 'guarded'" in err and users["reader"]["AWS_SECRET_ACCESS_KEY"] not in err

    # With the admin's keys it works, and the reader can then query but not ingest.
    admin = {**base, **users["admin"], "OHLCV_CATALOG_URI": f"sqlite:///{tmp_path / 'b.db'}"}
    for name, value in admin.items():
        monkeypatch.setenv(name, value)
    assert ohlcv(capsys, "init")[0] == 0
    for name, value in users["reader"].items():
        monkeypatch.setenv(name, value)
    assert ohlcv(capsys, "candles", "--symbol", "BTC-USDT", "--timeframe", "1h")[0] == 0
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"exchange": ["binance"], "symbol": ["BTC-USDT"], "trade_id": ["1"], "price": [1.0],
                             "quantity": [1.0], "timestamp": pa.array([utc(2024, 5, 1)], pa.timestamp("us", tz="UTC"))}), path)
    err = one_line_error(capsys, {}, monkeypatch, "ingest", str(path))
    assert "access to bucket 'guarded'" in err
    for name, value in users["admin"].items():
        monkeypatch.setenv(name, value)
    catalog = open_catalog(from_environment())
    assert stored_trades(catalog) == [] and load_trades(catalog, "market_data").current_snapshot() is None


def test_a_missing_workflow_storage_bucket_is_refused_not_created(s3_environment, tmp_path):
    bucket = s3_environment["BUCKET"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_ADDRESS"))}
    env.update(OHLCV_WAREHOUSE=f"s3://{bucket}/warehouse", OHLCV_CATALOG_URI=f"sqlite:///{tmp_path / 'c.db'}",
               OHLCV_WORKFLOW_STORAGE="s3://no-workflow-bucket/runs")
    result = subprocess.run([str(BIN / "ohlcv"), "workflows", "list"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "OHLCV_WORKFLOW_STORAGE: bucket 'no-workflow-bucket' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and SECRET not in result.stdout + result.stderr
    import boto3

    names = [b["Name"] for b in boto3.client("s3", endpoint_url=s3_environment["AWS_ENDPOINT_URL"], region_name="us-east-1")
             .list_buckets()["Buckets"]]
    assert "no-workflow-bucket" not in names  # Ray would have created it


# ------------------------------------------------------------------------ with Spark (slow tier)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["spark", "arrow"])
def test_the_pipeline_on_s3_matches_the_oracle(s3_settings, spark, tmp_path, engine):
    """Crafted tie-breaks and duplicates plus a generated day, aggregated by Spark executors that
    read the bucket through pyiceberg's FileIO (the native reader needs local files), or, as a
    request this small is by default, read and computed in the Spark service's driver."""
    from ohlcv.generate import GenerateSpec, generate

    s3_settings = s3_settings.with_overrides(driver_max_trades=0 if engine == "spark" else 500_000)

    catalog = open_catalog(s3_settings)
    ingest_rows(s3_settings, catalog, crafted_trades(), tmp_path, "crafted", utc(2024, 2, 2))
    generated = generate(GenerateSpec(utc(2024, 2, 1), utc(2024, 2, 2), symbols=2, exchanges=2, trades_per_day=4_000, seed=5))
    ingest_rows(s3_settings, catalog, generated.to_pylist(), tmp_path, "generated", utc(2024, 2, 3))
    outcomes = run_chunks(s3_settings, plan_backfill(ALL, utc(2024, 1, 31), utc(2024, 2, 2), closed_before=NOW), lambda: NOW)
    assert {(o.aggregated.engine, o.aggregated.read_mode) for o in outcomes} == {(engine, "arrow")}
    trades = stored_trades(catalog)
    for tf in ALL:
        rows = load_candles(catalog, s3_settings.namespace, tf).scan().to_arrow().to_pylist()
        problems = compare(rows, expected_candles(trades, tf.width))
        assert not problems, f"{tf.name}: " + "; ".join(problems[:5])


@pytest.mark.slow
@pytest.mark.own_cluster(seconds=90)
def test_the_whole_cli_flow_on_s3_leaves_nothing_on_local_disk(s3_environment, tmp_path):
    """What a new user does, with only AWS_* and OHLCV_* set: every command a process of its own."""
    bucket = s3_environment["BUCKET"]
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_ADDRESS"))}
    env.update(OHLCV_WAREHOUSE=f"s3://{bucket}/warehouse", OHLCV_WORKFLOW_STORAGE=f"s3://{bucket}/workflow-storage",
               OHLCV_CATALOG_URI=f"sqlite:///{tmp_path / 'catalog.db'}", OHLCV_STEP_RETRY_DELAY="1")
    outputs: list[str] = []

    def run(*args: str, expect: int = 0) -> str:
        result = subprocess.run([str(BIN / "ohlcv"), *args], env=env, cwd=work, capture_output=True, text=True, timeout=600)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == expect, f"ohlcv {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    run("init")
    inputs = tmp_path / "inputs"
    run("generate", "--out", str(inputs / "day.parquet"), "--start", "2024-05-01T20:00", "--end", "2024-05-02T04:00",
        "--symbols", "2", "--exchanges", "2", "--trades-per-day", "9000", "--seed", "3")
    # A CSV file that repeats some trades of the Parquet file with other values: the first wins.
    day = pq.read_table(inputs / "day.parquet").to_pylist()
    with open(inputs / "late.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["exchange", "symbol", "trade_id", "price", "quantity", "timestamp"])
        writer.writeheader()
        for row in day[:50]:
            writer.writerow({**{k: row[k] for k in ("exchange", "symbol", "trade_id", "quantity")},
                             "price": row["price"] * 2, "timestamp": row["timestamp"].isoformat()})
    run("ingest", str(inputs / "day.parquet"))
    run("ingest", str(inputs / "late.csv"))
    run("backfill", "--timeframe", "all", "--start", "2024-05-01", "--end", "2024-05-03")
    listed = run("workflows", "list")
    assert "backfill" in listed and "SUCCESSFUL" in listed
    shown = json.loads(run("--debug", "candles", "--symbol", "BTC-USDT", "--timeframe", "1h", "--format", "json"))

    settings = from_environment({**env})
    catalog = open_catalog(settings)
    trades = stored_trades(catalog)
    assert len(trades) == len(day)  # the CSV's later versions went to quarantine
    quarantined = load_table(catalog, settings.namespace, s.QUARANTINE_TABLE).scan().to_arrow().to_pylist()
    assert sorted(r["trade_id"] for r in quarantined if r["reason"] == "duplicate") == sorted(r["trade_id"] for r in day[:50])
    for tf in ALL:
        stored = load_candles(catalog, settings.namespace, tf).scan().to_arrow().to_pylist()
        problems = compare(stored, expected_candles(trades, tf.width))
        assert not problems, f"{tf.name}: " + "; ".join(problems[:5])
        if tf.name == "1h":  # what the command showed is what the table holds
            assert sorted((c["exchange"], datetime.fromisoformat(c["window_start"].replace("Z", "+00:00")), c["close_price"])
                          for c in shown) == sorted((r["exchange"], r["window_start"], r["close_price"]) for r in stored
                                                    if r["symbol"] == "BTC-USDT")

    assert not any(SECRET in text for text in outputs)
    local = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert local == ["catalog.db", "inputs/day.parquet", "inputs/late.csv"], local
    assert bucket_files(settings, f"s3://{bucket}/workflow-storage")  # the runs live in the bucket


def test_the_storage_commands_check_both_places_and_build_rays_uri(capsys, monkeypatch, s3_environment, tmp_path):
    bucket = s3_environment["BUCKET"]
    monkeypatch.setenv("OHLCV_WAREHOUSE", f"s3://{bucket}/warehouse")
    monkeypatch.setenv("OHLCV_CATALOG_URI", f"sqlite:///{tmp_path / 'c.db'}")
    code, out, err = ohlcv(capsys, "storage", "ray-uri")
    endpoint = s3_environment["AWS_ENDPOINT_URL"].removeprefix("http://").replace(":", "%3A")
    assert code == 0 and out.strip() == f"s3://{bucket}/workflow-storage?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    code, out, err = ohlcv(capsys, "storage", "check")
    assert code == 0, err
    assert f"OHLCV_WAREHOUSE         s3://{bucket}/warehouse" in out and "OHLCV_WORKFLOW_STORAGE" in out
    assert out.count("readable and writable") == 2 and SECRET not in out + err
    assert bucket_files(from_environment(), f"s3://{bucket}") == []  # the write checks left nothing behind
