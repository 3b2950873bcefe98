"""Issue 14, item 2: ``kill -9`` in the middle of the batch pipeline and of the stream monitor,
then a re-run to completion: every table equals the one a clean, uninterrupted run writes
from the same input.

Each job runs as a user runs it (``./spark-submit.sh``, its own process group, Spark
``local[2,3]``) and is killed with SIGKILL once its first Delta table has a commit (the
pipeline: ``silver/<uc>_events``, in validate; the monitor: its partial-count state table,
before any window is written). The re-run and the clean run run in the test's session, each
on a lake, checkpoints and MLflow store of its own, over the same Kafka topics. Tables are
compared as sorted frames; columns that record when or in which run a row was written are
left out (:data:`RUN_DEPENDENT`), the lake's path is masked, floats compared to 1e-9 relative.

Negative controls, so the comparison is known to see a difference: the pipeline's bronze
table with the killed range ingested again by a plain append (what ingest did without its
MERGE on topic, partition, offset) differs; the monitor re-run after its partial counts were
appended a second time (what the replayed batch wrote without its Delta transaction id)
differs, in the window volumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from rel_support import FRAUD, SCRIPT, platform_args, small_usecase, table, write_usecase

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, load_platform, load_usecase
from driftline.delta import read_delta, write_delta
from driftline.kafka.spark import bronze_records, kafka_watermarks, read_kafka_batch
from driftline.monitoring import await_all, start_monitor, state_path
from driftline.pipelines import retrain, train
from driftline.produce import produce_usecase
from driftline.profile import build_reference_profile
from driftline.registry import client_for
from driftline.simulate import make_generator

# columns that say when or in which run a row was written, not what it holds
RUN_DEPENDENT = {
    "ingest_time",       # bronze, silver, quarantine: when the record was ingested
    "run_id",            # quarantine, validation report: the validate run; audit: the MLflow run
    "quarantined_at",    # quarantine: the validate run's time
    "run_time",          # validation report
    "computed_at",       # monitoring tables: when the window was written
}
# per table: the audit row's event_time is when the pipeline run started
RUN_DEPENDENT_IN = {"audit": {"event_time"}}
MLFLOW_RUN = re.compile(r"\b[0-9a-f]{32}\b")
SKIPPED = {"monitoring/queries"}  # the listener's telemetry of the killed process: a record of that run
SMALL_MODEL: dict[str, Any] = {
    "estimator": "logistic_regression",
    "estimator_params": {"maxIter": 10},
    "search": {"method": "grid", "params": {"regParam": [0.01]}, "parallelism": 1},
    "gate": {"metric": "roc_auc", "tolerance": 0.5, "min": None},
}


def run_platform(platform: PlatformConfig, root: Path) -> PlatformConfig:
    """``platform`` with a lake, checkpoints and MLflow store of its own under ``root``."""
    data = platform.model_dump(mode="json")
    data["lake_root"] = str(root / "lake")
    data["checkpoint_root"] = str(root / "checkpoints")
    data["mlflow"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "home": str(root / "mlflow")}
    return PlatformConfig.model_validate(data)


def kill_when(script: str, args: list[str], ready: Callable[[], bool], log: Path, timeout: float = 300) -> float:
    """Start ``./spark-submit.sh script args`` in its own process group, SIGKILL the group as
    soon as ``ready()``; return the seconds it ran. Fails if the job ends first."""
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([str(SCRIPT), script, *args], cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "SPARK_MASTER": "local[2,3]"}, start_new_session=True)
    try:
        while not ready():
            assert proc.poll() is None, f"{script} ended before the kill point:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - started < timeout, f"{script}: no kill point after {timeout}s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return time.monotonic() - started


def committed(path: str) -> Callable[[], bool]:
    log = Path(path) / "_delta_log"
    return lambda: log.is_dir() and any(p.suffix == ".json" for p in log.iterdir())


def delta_tables(lake: Path) -> set[str]:
    return {f"{t.parent.parent.name}/{t.parent.name}" for t in lake.glob("*/*/_delta_log")} - SKIPPED


def _rounded(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _text(value: Any, masks: dict[str, str]) -> Any:
    if isinstance(value, np.ndarray | dict | list | tuple):  # maps and arrays: JSON, floats to 9 digits
        value = json.dumps(_rounded(value), sort_keys=True, default=str)
    if isinstance(value, str):
        for real, mask in masks.items():
            value = value.replace(real, mask)
        value = MLFLOW_RUN.sub("<mlflow run>", value)  # 'registered from run <id>': run-dependent
    return value


def canonical(frame: pd.DataFrame, layer: str, masks: dict[str, str]) -> pd.DataFrame:
    """The table without its run-dependent columns, values as comparable scalars, rows sorted."""
    drop = (RUN_DEPENDENT | RUN_DEPENDENT_IN.get(layer, set())) & set(frame.columns)
    out = frame.drop(columns=sorted(drop))
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: _text(v, masks))
    keys = pd.DataFrame({c: (out[c].round(9) if out[c].dtype.kind == "f" else out[c]).astype(str)
                         for c in out.columns})
    return out.loc[keys.sort_values(list(keys.columns)).index].reset_index(drop=True)


def differences(clean: Path, rerun: Path) -> dict[str, str]:
    """Each table of the two lakes that differs (a missing table too), with why."""
    a, b = delta_tables(clean), delta_tables(rerun)
    found = {t: "only in one lake" for t in a ^ b}
    for name in sorted(a & b):
        left = canonical(table(clean / name), name.split("/")[0], {str(clean): "<lake>"})
        right = canonical(table(rerun / name), name.split("/")[0], {str(rerun): "<lake>"})
        try:
            pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, check_dtype=False)
        except AssertionError as e:
            found[name] = str(e).splitlines()[0] + f" ({len(left)} vs {len(right)} rows)"
            print(f"--- {name}: {found[name]}\n{left.head(6).to_string()}\n{right.head(6).to_string()}")
    return found


def user_platform(killed: PlatformConfig) -> PlatformConfig:
    """The configuration the job run with ``platform_args(killed)`` loads (its digest is part of
    each table's lineage: a re-run with another configuration recomputes, by design)."""
    args = platform_args(killed)
    return load_platform(overrides=args[1::2])


@pytest.fixture()
def restore_mlflow(base_platform: PlatformConfig) -> Any:
    yield
    client_for(base_platform)  # the session's store is MLflow's default again


def test_pipeline_killed_mid_run_then_rerun_writes_the_tables_of_a_clean_run(
    spark: SparkSession, platform: PlatformConfig, tmp_path: Path, restore_mlflow: Any
) -> None:
    uc = small_usecase(model={**FRAUD.raw("model"), **SMALL_MODEL},
                       simulator={"fraud_rate": 0.15})
    uc_file = write_usecase(uc, tmp_path / "uc.yaml")
    produced = produce_usecase(platform, uc, events=600, seed=81, flush_labels=True,
                               scenarios=["malformed:rate=0.03", "duplicates:rate=0.03"])
    assert produced.acked == 600 and produced.labels_acked > 0
    clean, killed = run_platform(platform, tmp_path / "clean"), run_platform(platform, tmp_path / "killed")
    silver = catalog.path(killed, "silver_events", uc)

    seconds = kill_when("jobs/pipeline.py", ["--usecase", str(uc_file), "--once", *platform_args(killed)],
                        committed(silver), tmp_path / "killed.log")
    assert Path(catalog.path(killed, "bronze_events", uc)).is_dir()
    assert not Path(catalog.path(killed, "features_offline", uc)).exists()  # killed before the features
    print(f"pipeline killed after {seconds:.0f}s, at the first commit of {silver}")

    rerun = retrain.run(spark, user_platform(killed), load_usecase(uc_file), reason="manual")  # as the user re-runs
    reference = retrain.run(spark, clean, uc, reason="manual")
    assert rerun.version == reference.version == 1 and rerun.promoted and reference.promoted
    assert rerun.ingested["events"] == 0 and reference.ingested["events"] == 600  # the killed run had them
    lakes = Path(clean.lake_root), Path(killed.lake_root)
    tables = delta_tables(lakes[0])
    assert {"bronze/" + uc.name + "_events", "silver/" + uc.name + "_labels", "gold/" + uc.name + "_features_offline",
            "audit/" + uc.name + "_model_events", "monitoring/" + uc.name + "_validation"} <= tables
    assert differences(*lakes) == {}

    # negative control: the killed range ingested again without the MERGE (a plain append) is seen
    topic = uc.topic("events")
    ends = {p: high for p, (_, high) in kafka_watermarks(killed.kafka, topic).items()}
    raw = read_kafka_batch(spark, killed.kafka, topic, "earliest", ends)
    write_delta(bronze_records(raw), catalog.path(killed, "bronze_events", uc), mode="append")
    assert set(differences(*lakes)) == {f"bronze/{uc.name}_events"}

    # a kill between registering a version and gating it (train without the gate stands in for
    # it): the re-run finds no fresh data, but gates that version instead of skipping it
    ungated = train.run(spark, clean, uc, gate=False)
    assert ungated.version == 2 and ungated.gate is None
    again = retrain.run(spark, clean, uc, reason="manual")
    assert again.skipped is None and again.version == 2 and again.gate == "shadow_start"
    audit = table(catalog.path(clean, "model_events", uc))
    assert sorted(audit[audit["to_version"] == 2]["action"]) == ["register", "retrain_triggered", "shadow_start"]


def test_monitor_killed_mid_run_then_rerun_writes_the_windows_of_a_clean_run(
    spark: SparkSession, platform: PlatformConfig, tmp_path: Path
) -> None:
    uc = small_usecase(drift={**FRAUD.raw("drift"), "window": "1m", "lateness": "2m"})
    uc_file = write_usecase(uc, tmp_path / "uc.yaml")
    gen = make_generator(uc, seed=3, start="2024-01-01T00:00:00Z", diurnal=False, chunk_size=2000)
    reference = gen.next_chunk().events
    profile = build_reference_profile(spark.createDataFrame(reference[["amount", "merchant_category", "country"]]),
                                      ["amount"], ["merchant_category", "country"], bins=10)
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(json.dumps(profile))
    assert produce_usecase(platform, uc, events=900, seed=83, labels=False,
                           scenarios=["malformed:rate=0.05", "late:rate=0.1,lag=90s"]).acked == 900
    clean, killed = run_platform(platform, tmp_path / "clean"), run_platform(platform, tmp_path / "killed")
    state = state_path(killed, uc, "events")

    args = ["--usecase", str(uc_file), "--profile", str(profile_file), "--sources", "events", "--no-alerts",
            *platform_args(killed)]
    seconds = kill_when("streaming/monitor.py", args, committed(state), tmp_path / "killed.log")
    print(f"monitor killed after {seconds:.0f}s, at the first commit of {state}")
    # a copy of the killed run's lake and checkpoints, for the negative control
    copy = run_platform(platform, tmp_path / "copy")
    shutil.copytree(tmp_path / "killed" / "lake", tmp_path / "copy" / "lake")
    shutil.copytree(tmp_path / "killed" / "checkpoints", tmp_path / "copy" / "checkpoints")

    def monitor(where: PlatformConfig) -> None:  # the user's use case and profile files
        await_all(start_monitor(spark, where, load_usecase(uc_file), json.loads(profile_file.read_text()),
                                trigger="availableNow", sources=["events"], alerts=False))

    monitor(user_platform(killed))  # the re-run: Spark replays the killed micro-batch
    monitor(clean)
    lakes = Path(clean.lake_root), Path(killed.lake_root)
    assert {f"monitoring/{uc.name}_drift", f"monitoring/{uc.name}_quality"} <= delta_tables(lakes[0])
    quality = table(catalog.path(clean, "quality", uc))
    volume = quality.loc[(quality["metric"] == "volume") & (quality["column"] == "events"), "value"]
    assert len(volume) >= 5 and 0.9 * 900 < volume.sum() <= 900  # records without a readable time: in none
    assert differences(*lakes) == {}

    # negative control: the partial counts appended once more, as the replay did without its
    # transaction id: the re-run's windows are not the clean run's
    copy_state = state_path(copy, uc, "events")
    write_delta(read_delta(spark, copy_state), copy_state, mode="append")
    monitor(copy)
    found = differences(lakes[0], Path(copy.lake_root))
    assert {f"monitoring/{uc.name}_quality", f"monitoring/{uc.name}_drift"} <= set(found), found
