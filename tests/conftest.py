"""Shared fixtures: one SparkSession, one Kafka broker and one MLflow store per
test session; a fresh lake directory per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.config import PlatformConfig, load_platform
from driftline.kafka.broker import EmbeddedBroker, free_port


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("driftline")


@pytest.fixture(scope="session")
def broker(session_dir: Path) -> Iterator[EmbeddedBroker]:
    """A real Apache Kafka broker (KRaft) on free loopback ports, for the whole run."""
    base = load_platform()
    b = EmbeddedBroker(
        home=session_dir / "kafka",
        jars=Path(base.path(base.jars_dir)) / "kafka",
        port=free_port(),
        controller_port=free_port(),
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def base_platform(session_dir: Path) -> PlatformConfig:
    """Platform config for tests, without a broker: lake and MLflow under a temp dir."""
    root = session_dir / "platform"
    return load_platform(
        overrides=[
            f"lake_root={root / 'lake'}",
            f"checkpoint_root={root / 'checkpoints'}",
            f"mlflow.home={root / 'mlflow'}",
            "spark.ui_enabled=false",
            "spark.shuffle_partitions=2",
            "spark.log_level=ERROR",
            "spark.driver_memory=3g",
        ],
        env={},
    )


def uncatalogued_tables(lake: Path) -> list[str]:
    """Delta tables under ``lake`` that the catalog does not name (every table must be in it)."""
    from driftline.catalog import identify

    found = [log.parent for log in lake.glob("*/*/_delta_log")] if lake.is_dir() else []
    return sorted(f"{t.parent.name}/{t.name}" for t in found if identify(t.parent.name, t.name) is None)


@pytest.fixture()
def platform(base_platform: PlatformConfig, broker: EmbeddedBroker, tmp_path: Path) -> Iterator[PlatformConfig]:
    """Per-test platform config: a fresh lake and checkpoints, the session's broker. After the
    test, every Delta table the platform wrote into the lake must be one the catalog names."""
    data = base_platform.model_dump(mode="json")
    data["lake_root"] = str(tmp_path / "lake")
    data["checkpoint_root"] = str(tmp_path / "checkpoints")
    data["kafka"]["bootstrap_servers"] = broker.bootstrap
    yield PlatformConfig.model_validate(data)
    unknown = uncatalogued_tables(tmp_path / "lake")
    assert not unknown, f"tables written outside the catalog (driftline.catalog.TABLES): {unknown}"


@pytest.fixture(scope="session")
def spark_master() -> str:
    """The test run's Spark master; tests/reliability/conftest.py turns task retries on."""
    return "local[2]"


@pytest.fixture(scope="session")
def spark(base_platform: PlatformConfig, spark_master: str):  # type: ignore[no-untyped-def]
    """The one SparkSession for the test run (``spark_master``, UI off, 2 shuffle partitions)."""
    from driftline.session import build_session

    data = base_platform.model_dump(mode="json")
    data["spark"]["master"] = spark_master
    session = build_session(PlatformConfig.model_validate(data), "driftline-tests", testing=True)
    yield session
    session.stop()


@pytest.fixture()
def topic(broker: EmbeddedBroker) -> str:
    """A fresh, uniquely named topic with 2 partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


@pytest.fixture()
def mlflow_platform(
    base_platform: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PlatformConfig]:
    """Per-test platform for model tests: a fresh lake and its own MLflow store
    (``sqlite:///<tmp_path>/mlflow.db``, artifacts under ``<tmp_path>/mlflow``); no broker."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = base_platform.model_dump(mode="json")
    data["lake_root"] = str(tmp_path / "lake")
    data["checkpoint_root"] = str(tmp_path / "checkpoints")
    data["mlflow"] = {"tracking_uri": uri, "home": str(tmp_path / "mlflow")}
    yield PlatformConfig.model_validate(data)
    unknown = uncatalogued_tables(tmp_path / "lake")
    assert not unknown, f"tables written outside the catalog (driftline.catalog.TABLES): {unknown}"


@pytest.fixture()
def broker_platform(mlflow_platform: PlatformConfig, broker: EmbeddedBroker) -> PlatformConfig:
    """``mlflow_platform`` (a fresh lake, its own MLflow store) on the session's broker."""
    data = mlflow_platform.model_dump(mode="json")
    data["kafka"]["bootstrap_servers"] = broker.bootstrap
    return PlatformConfig.model_validate(data)
