"""docker-compose.yml and the project image (Dockerfile): the same pins as `make setup`,
and every password, token and secret from the environment, with no default.

`docker compose config` (where the docker client exists) resolves the file as compose
would run it; the Dockerfile, the poms and pyproject.toml are read as text. Nothing is
built or started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from functools import cache
from typing import Any

import pytest
import yaml

from driftline.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
EXPECTED = {"kafka", "spark-master", "spark-worker-1", "spark-worker-2", "postgres", "mlflow", "notebook"}
SPARK_SERVICES = ("spark-master", "spark-worker-1", "spark-worker-2")
PROJECT_IMAGE_SERVICES = (*SPARK_SERVICES, "notebook", "mlflow")
# Every secret the stack needs; each must come from the environment (no default).
SECRETS = ("MLFLOW_DB_PASSWORD", "MLFLOW_ADMIN_USERNAME", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
           "JUPYTER_TOKEN", "SPARK_AUTH_SECRET")
TEST_VALUES = {name: f"test-value-of-{name.lower()}" for name in SECRETS}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")

needs_docker = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")


def compose_config(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with exactly ``values`` as the secrets (no .env file is read)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS} | values
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", os.devnull, "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    res = compose_config(TEST_VALUES)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["services"]


@cache
def pins() -> dict[str, str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {"driftline": project["version"], **dict(dep.split("==") for dep in project["dependencies"])}


def pom_properties(name: str) -> dict[str, str]:
    root = ET.parse(PROJECT_ROOT / "conf" / "jvm" / name).getroot()
    ns = "{http://maven.apache.org/POM/4.0.0}"
    props = root.find(f"{ns}properties")
    assert props is not None, f"{name} has no <properties>"
    return {el.tag.removeprefix(ns): (el.text or "").strip() for el in props}


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))


@needs_docker
def test_compose_file_is_valid_and_wired_to_one_config(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED
    for name in (*SPARK_SERVICES, "notebook"):
        env = services[name]["environment"]
        assert env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DRIFTLINE_MLFLOW__TRACKING_URI"] == "http://mlflow:5000"
        assert env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


@needs_docker
def test_spark_notebook_and_mlflow_run_the_project_image(services: dict[str, Any]) -> None:
    image = f"driftline:{pins()['driftline']}"
    for name in PROJECT_IMAGE_SERVICES:
        svc = services[name]
        assert svc["image"] == image, name
        assert svc["build"]["context"] == str(PROJECT_ROOT), name
        assert svc["build"].get("dockerfile", "Dockerfile") == "Dockerfile", name
    # pyspark's own launcher, from the image: no second Spark distribution
    assert services["spark-master"]["command"][:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    for name in ("spark-worker-1", "spark-worker-2"):
        assert services[name]["command"] == [
            "spark-class", "org.apache.spark.deploy.worker.Worker", "spark://spark-master:7077"]
    assert services["notebook"]["command"][:2] == ["jupyter", "lab"]
    # nothing is installed when a container starts
    for name, svc in services.items():
        started = json.dumps([svc.get("command"), svc.get("entrypoint")])
        assert "pip install" not in started and "pip3 install" not in started, name
    assert "pip install" not in (PROJECT_ROOT / "bin" / "container-entrypoint").read_text()


def test_images_use_the_pinned_spark_connector_and_kafka_versions() -> None:
    p = pins()
    connectors = pom_properties("spark-connectors.pom.xml")
    # Spark: the image runs pyspark installed from pyproject.toml, and the build fails
    # unless it is SPARK_VERSION (the Dockerfile checks pyspark.__version__ against it)
    assert dockerfile_args()["SPARK_VERSION"] == p["pyspark"] == connectors["spark.version"]
    text = DOCKERFILE.read_text()
    assert "COPY pyproject.toml" in text and 'p["dependencies"]' in text and "pip install -r" in text
    assert "pyspark.__version__" in text and "${SPARK_VERSION}" in text
    assert re.search(r"^FROM python:3\.11|^ARG PYTHON_IMAGE=python:3\.11", text, re.M), "not Python 3.11"
    # Delta and the Kafka connector: resolved in the image from the same poms as `make setup`
    assert connectors["delta.version"] == p["delta-spark"]
    spark_minor = ".".join(p["pyspark"].split(".")[:2])
    assert f"<artifactId>delta-spark_{spark_minor}_" in (PROJECT_ROOT / "conf/jvm/spark-connectors.pom.xml").read_text()
    assert re.search(r"^COPY conf/jvm/ conf/jvm/$", text, re.M), "the image must resolve the poms of conf/jvm/"
    assert re.search(r"^COPY bin/fetch-jars ", text, re.M) and re.search(r"bin/fetch-jars", text.split("COPY bin/fetch-jars")[1])
    assert "spark-connectors.pom.xml" in (PROJECT_ROOT / "bin" / "fetch-jars").read_text()
    assert re.search(r"^COPY --from=jars .* /opt/driftline/\.driftline/jars$", text, re.M)
    # Kafka: the broker image is the broker version the embedded broker runs
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pom_properties('kafka-broker.pom.xml')['kafka.version']}"
    assert compose["x-project-image"]["image"] == f"driftline:{p['driftline']}"


def test_image_context_and_secrets_stay_out_of_git_and_the_image() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".driftline", "mlruns", ".env"} <= set(ignored)
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().split()
    # .env.example names every variable the compose file requires, with placeholders
    example = dict(line.split("=", 1) for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert set(example) == required == set(SECRETS)
    assert all(v.startswith("change-me") for k, v in example.items() if SECRET_NAME.search(k))


def test_no_secret_has_a_default_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for name, op in re.findall(r"\$\{(\w+)(:?[-?+=]?)", text):
        if SECRET_NAME.search(name) or name in SECRETS:
            assert op == ":?", f"${{{name}}} must be required (${{{name}:?...}}), not defaulted or optional"
    assert "token=''" not in text and 'token=""' not in text


@needs_docker
def test_every_secret_comes_from_the_environment(services: dict[str, Any]) -> None:
    values = set(TEST_VALUES.values())
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_OPTS"):
                assert value in values, f"{name}: {key} is not taken from the environment"
        for port in svc.get("ports", []):  # published on this machine only
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} on every interface"
    # MLflow: PostgreSQL backend and basic authentication, password never in a URI
    mlflow = services["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    store = cmd[cmd.index("--backend-store-uri") + 1]
    assert store.startswith("postgresql+psycopg2://") and ":" not in store.split("//")[1].split("@")[0]
    assert "--disable-security-middleware" not in cmd
    env = mlflow["environment"]
    assert env["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"] == TEST_VALUES["MLFLOW_DB_PASSWORD"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == TEST_VALUES["MLFLOW_ADMIN_USERNAME"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == TEST_VALUES["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == TEST_VALUES["MLFLOW_FLASK_SECRET_KEY"]
    ini = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert ini.startswith("/opt/driftline/")
    auth = (PROJECT_ROOT / ini.removeprefix("/opt/driftline/")).read_text()
    assert "admin_password" not in auth  # from MLFLOW_AUTH_ADMIN_PASSWORD only
    assert re.search(r"^database_uri = postgresql\+psycopg2://mlflow@", auth, re.M)
    # the notebook: its token, and jobs logging to MLflow as the admin user
    nb = services["notebook"]["environment"]
    assert nb["JUPYTER_TOKEN"] == TEST_VALUES["JUPYTER_TOKEN"]
    assert nb["MLFLOW_TRACKING_USERNAME"] == TEST_VALUES["MLFLOW_ADMIN_USERNAME"]
    assert nb["MLFLOW_TRACKING_PASSWORD"] == TEST_VALUES["MLFLOW_ADMIN_PASSWORD"]
    assert "token" not in json.dumps(services["notebook"]["command"]).lower()
    # Spark: the shared secret on the master, the workers and the drivers; no REST submissions
    auth_opts = f"-Dspark.authenticate=true -Dspark.authenticate.secret={TEST_VALUES['SPARK_AUTH_SECRET']}"
    for name in SPARK_SERVICES:
        assert services[name]["environment"]["SPARK_DAEMON_JAVA_OPTS"] == auth_opts, name
    assert nb["SPARK_SUBMIT_OPTS"] == auth_opts
    assert "-Dspark.master.rest.enabled=false" in services["spark-master"]["environment"]["SPARK_MASTER_OPTS"]


@needs_docker
@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_run_without_a_secret_and_names_it(missing: str) -> None:
    for value in (None, ""):  # unset, or set but empty
        values = {k: v for k, v in TEST_VALUES.items() if k != missing}
        if value is not None:
            values[missing] = value
        res = compose_config(values)
        assert res.returncode != 0, f"compose config passed without {missing}"
        assert missing in res.stderr, res.stderr
