"""The batch pipeline and the scoring query on a real Spark standalone cluster.

A master and two workers (one core each, loopback) are started from the Spark that pyspark
ships. The same input is run twice through ``./spark-submit.sh``, once with ``local[2]`` and
once with ``--master spark://…``, each into its own lake and MLflow store; the outputs must be
equal: feature rows, the model's test metrics and threshold, predictions by event id.

The executors run a Python that cannot import driftline from the source tree (the venv's
editable install is skipped): the library reaches them only through what spark-submit.sh
ships (``--py-files``). The driver and executors are separate JVMs, so anything that only
works in-process fails here.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, load_platform, load_usecase
from driftline.kafka.broker import EmbeddedBroker
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.registry import CHAMPION, model_name
from driftline.simulate import make_generator
from driftline.standalone import StandaloneCluster, isolated_executor_python, submit_job

N_EVENTS = 3000
WORKERS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A standalone master and two one-core workers on loopback, stopped after the module."""
    with StandaloneCluster(home=tmp_path_factory.mktemp("standalone"), workers=WORKERS) as c:
        yield c


def submit(master: str, home: Path, bootstrap: str, uc_file: Path, file: str, *args: str,
           env: dict[str, str]) -> None:
    settings: dict[str, object] = {
        "lake_root": home / "lake", "checkpoint_root": home / "checkpoints",
        "kafka.bootstrap_servers": bootstrap, "mlflow.tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        "mlflow.home": home / "mlflow", "spark.ui_enabled": "false",
    }
    submit_job(master, file, "--usecase", str(uc_file), *args, home=home, settings=settings, env=env)


def test_pipeline_and_scoring_on_a_standalone_cluster_equal_a_local_run(
    cluster: StandaloneCluster, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    base = load_usecase("fraud")
    name = f"fraudc_{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load((PROJECT_ROOT / "conf/usecases/fraud.yaml").read_text())
    data["name"] = name
    data["model"]["search"]["params"] = {"regParam": [0.0, 0.01]}  # small: the point is where it runs
    uc_file = tmp_path / f"{name}.yaml"
    uc_file.write_text(yaml.safe_dump(data))
    uc = load_usecase(uc_file)
    assert uc.name == name and uc.event_id == base.event_id

    # one input for both runs: events and their labels on the real broker
    platform = load_platform(overrides=[f"kafka.bootstrap_servers={broker.bootstrap}"])
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    gen = make_generator(uc, seed=21, chunk_size=N_EVENTS)
    chunk = gen.next_chunk()
    producer = make_producer(platform.kafka)
    for key, value in zip(gen.event_keys(chunk), gen.encode_events(chunk), strict=True):
        producer.produce(uc.topic("events"), key=key, value=value)
    for key, value in zip(gen.label_keys(chunk), gen.encode_labels(chunk), strict=True):
        producer.produce(uc.topic("labels"), key=key, value=value)
    assert producer.flush(60) == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "MLFLOW_", "PYSPARK_"))}
    runs = {"local": "local[2]", "cluster": cluster.url}
    homes = {mode: tmp_path / mode for mode in runs}
    lakes: dict[str, PlatformConfig] = {
        mode: load_platform(overrides=[f"lake_root={home / 'lake'}"]) for mode, home in homes.items()}
    for mode, master in runs.items():
        homes[mode].mkdir()
        run_env = dict(env)
        if mode == "cluster":
            run_env["PYSPARK_PYTHON"] = str(isolated_executor_python(tmp_path))
            run_env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        submit(master, homes[mode], broker.bootstrap, uc_file, "jobs/pipeline.py", "--once", env=run_env)
        submit(master, homes[mode], broker.bootstrap, uc_file, "streaming/score.py", "--trigger", "availableNow",
               env=run_env)

    # the application really ran on the cluster: two executors, one per worker
    apps = cluster.completed_apps()
    assert len(apps) == 2 and all(a["cores"] == WORKERS for a in apps), apps  # the pipeline and the query

    # --- features: the same rows
    def table(mode: str, key: str, index: str) -> pd.DataFrame:
        return DeltaTable(catalog.path(lakes[mode], key, uc)).to_pandas().set_index(index).sort_index()

    silver = table("local", "silver_events", uc.event_id)
    local, remote = table("local", "features_offline", uc.event_id), table("cluster", "features_offline", uc.event_id)
    assert local.index.is_unique and local.index.tolist() == silver.index.tolist()  # every event labelled
    assert len(local) > N_EVENTS * 0.9, len(local)  # the simulator's few bad records aside
    pd.testing.assert_frame_equal(remote, local, check_exact=False, rtol=1e-12, atol=1e-12)

    # --- model: the same champion, test metrics and decision threshold
    def champion_metrics(mode: str) -> dict[str, float]:
        uri = f"sqlite:///{homes[mode] / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not MLflow's process-wide registry
        version = client.get_model_version_by_alias(model_name(uc), CHAMPION)
        metrics = client.get_run(version.run_id).data.metrics
        return {k: v for k, v in metrics.items() if k.startswith("test_") or k == "decision_threshold"}

    local_m, remote_m = champion_metrics("local"), champion_metrics("cluster")
    assert {"test_roc_auc", "decision_threshold"} <= set(local_m), local_m
    assert local_m["test_roc_auc"] > 0.8, local_m  # a useful model, not only an equal one
    assert set(remote_m) == set(local_m)
    for key, value in local_m.items():
        assert remote_m[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    # --- streaming scores: every event once, the same score and decision
    local_p, remote_p = table("local", "predictions", "event_id"), table("cluster", "predictions", "event_id")
    assert local_p.index.is_unique and sorted(local_p.index) == sorted(local.index)
    assert remote_p.index.tolist() == local_p.index.tolist()
    np.testing.assert_allclose(remote_p["score"], local_p["score"], rtol=0, atol=1e-9)
    assert remote_p["prediction"].tolist() == local_p["prediction"].tolist()
    assert remote_p["model_version"].tolist() == local_p["model_version"].tolist()
