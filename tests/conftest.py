"""Every fixture of the suite: one real local Ray cluster and one RayDP Spark service per test
session, a fresh warehouse with a real SQLite (or PostgreSQL) Iceberg catalog per test, and the
workflow fixtures. Helpers that are not fixtures live in support.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest

from ohlcv.catalog import ensure_tables, open_catalog
from ohlcv.generate import GenerateSpec, generate
from ohlcv.settings import Settings
from workflows.local_ray import WARM_WORKERS_ENVIRONMENT
from support import S3_KEYS, free_port, ingest_rows, make_bucket, start_s3_server, stored_trades, utc

_OUR_VARIABLES = ("OHLCV_", "RAY_ADDRESS", "AWS_")
# Every JVM the tests start (Spark's driver and executors, in this process's clusters and in the
# clusters tests start as subprocesses) lives seconds to minutes: C1 alone and the serial GC cost
# a third less CPU than HotSpot's defaults there, and the suite is CPU-bound on 2 cores.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
# Every Ray the tests start (the session's, and those of the `ohlcv` commands and clusters they
# start as subprocesses) keeps idle workers as `ohlcv up`'s head does: Ray's default soft limit
# is the CPU count, and the long-lived actors (workflow manager, Spark service and master) count
# against it, so on 2 cores each step's worker was killed a second after it went idle and the
# next step started a fresh one that imported the project again (seconds each).
for _name, _value in WARM_WORKERS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
# Where `ohlcv up` records its local Ray: the tests' own, so that no test (nor any `ohlcv`
# process a test starts) joins a developer's warm Ray.
os.environ["XDG_STATE_HOME"] = _STATE_HOME = tempfile.mkdtemp(prefix="ohlcv-test-state-")
# Every Ray the tests start in its default place (the session's, and the `ohlcv` commands'
# own) keeps its logs in a folder of this run that goes when the run ends: in /tmp/ray they
# stayed, 36 MB a cluster, until with the benchmarks' they filled a CI machine's disk. Short,
# for Ray's socket paths (at most 107 characters).
os.environ["RAY_TMPDIR"] = _RAY_TMPDIR = tempfile.mkdtemp(prefix="ohlcv-t-", dir="/tmp")
# A PostgreSQL server for the catalog tests, given by CI; read now, before the isolation below.
POSTGRES_URI = os.environ.get("OHLCV_TEST_POSTGRES_URI")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own settings."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARIABLES):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint for the session: moto's server on a free loopback port."""
    server, url = start_s3_server()
    try:
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def s3_environment(s3_server, monkeypatch) -> dict[str, str]:
    """A fresh bucket, and the AWS_* variables of a user of it, set in this process too."""
    bucket = make_bucket(s3_server)
    variables = {**S3_KEYS, "AWS_ENDPOINT_URL": s3_server, "AWS_REGION": "us-east-1"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return {**variables, "BUCKET": bucket}


@pytest.fixture
def s3_settings(s3_environment, tmp_path) -> Settings:
    """Settings for a warehouse on S3 (a SQLite catalog file, the tables in a fresh bucket)."""
    bucket = s3_environment["BUCKET"]
    result = Settings(
        warehouse=f"s3://{bucket}/warehouse", catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        workflow_storage=f"s3://{bucket}/workflow-storage", s3_endpoint=s3_environment["AWS_ENDPOINT_URL"], s3_region="us-east-1",
    )
    ensure_tables(open_catalog(result), result.namespace)
    return result


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster with two CPUs, as on the CI machine, with workflow storage."""
    import ray

    storage = tmp_path_factory.mktemp("workflow-storage").as_uri()
    for name, value in S3_KEYS.items():
        os.environ.setdefault(name, value)  # for the workers; the tests themselves see none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Cluster-wide storage configuration is deprecated")
        ray.init(address="local", num_cpus=2, namespace="ohlcv", include_dashboard=False, log_to_driver=False, storage=storage)
    yield ray
    from workflows.spark.service import stop_service

    stop_service()
    ray.shutdown()


@pytest.fixture(scope="session")
def spark(ray_cluster):
    """The warm Spark service every Spark test shares (started once: it takes seconds)."""
    from workflows.spark.service import spark_service

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
    port = free_port()
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


@pytest.fixture
def catalog(settings: Settings):
    return open_catalog(settings)


@pytest.fixture
def workflows(ray_cluster):
    """`ray.workflow`, with every run deleted after the test: tick ids are per cluster, and
    each test has its own warehouse, so a stored tick of another test must not be returned."""
    from workflows.runtime import import_workflow
    from workflows.orchestration import journal

    workflow = import_workflow()
    yield workflow
    for workflow_id, status in workflow.list_all():
        if status.name == "RUNNING":
            workflow.cancel(workflow_id)
        workflow.delete(workflow_id)
        journal.delete_workflow(workflow_id)


@pytest.fixture
def fast(settings, tmp_path) -> Settings:
    """Settings with short retry delays and armed-failpoint support for this test."""
    return settings.with_overrides(step_retry_delay=0.5, step_timeout=120.0, failpoint_dir=str(tmp_path / "failpoints"))


@pytest.fixture
def day_of_trades(fast, catalog, tmp_path):
    rows = generate(GenerateSpec(utc(2024, 4, 1), utc(2024, 4, 3), symbols=2, exchanges=2, trades_per_day=6_000, seed=21)).to_pylist()
    ingest_rows(fast, catalog, rows, tmp_path, "trades", utc(2024, 4, 3, 1))
    return stored_trades(catalog)


def pytest_sessionfinish(session, exitstatus) -> None:
    """The run's own Ray folders and recorded state go with it (session fixtures stopped
    their clusters before this)."""
    for folder in (_RAY_TMPDIR, _STATE_HOME):
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that start clusters of their own go first, so that they run beside the light tests
    instead of forming a tail after them. Under `-n 2 --maxschedchunk 1` (pyproject) each worker
    starts with two tests, then takes one at a time: the two costliest go to the first worker, the
    next two to the second, and the light tests to whichever is free."""
    def cost(item) -> float:  # the marker's `seconds`, measured on 2 cores; light tests last
        marker = item.get_closest_marker("own_cluster")
        return -marker.kwargs.get("seconds", 60) if marker else 0

    items.sort(key=cost)  # stable: the light tests keep their order
