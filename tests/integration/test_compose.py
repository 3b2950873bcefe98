"""docker-compose.yml is accepted by `docker compose config` where the docker client exists."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from driftline.config import PROJECT_ROOT

EXPECTED = {"kafka", "spark-master", "spark-worker-1", "spark-worker-2", "postgres", "mlflow", "notebook"}


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_compose_file_is_valid_and_wired_to_one_config() -> None:
    res = subprocess.run(
        ["docker", "compose", "-f", str(PROJECT_ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert set(services) == EXPECTED
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", "notebook"):
        env = services[name]["environment"]
        assert env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DRIFTLINE_MLFLOW__TRACKING_URI"] == "http://mlflow:5000"
        assert env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
