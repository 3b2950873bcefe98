"""Issue 17's proof for `make demo`: `driftline demo` run as a user runs it (a subprocess of the
CLI, spark-submit for every Spark job) on the session's real broker, a fresh lake and its own
MLflow store. Every phase is shown (history, batch champion, live stream, drift switched on,
the monitor's alert, retraining, the challenger in shadow, canary steps, promoted or retired
with the reason, summary, report), and the summary equals what the Delta tables and the
registry hold: every live event acknowledged by the broker has exactly one served prediction.
The history champion is useful at its threshold: at least 50 test frauds, precision and recall
above 0.3."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import yaml
from deltalake import DeltaTable
from mlflow import MlflowClient

from driftline.config import PROJECT_ROOT, PlatformConfig
from driftline.config.usecase import usecase_path
from driftline.kafka.broker import EmbeddedBroker


def test_make_demo_shows_the_closed_loop_and_its_summary_equals_the_tables(
    base_platform: PlatformConfig, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    name = f"fraud_demo_{uuid.uuid4().hex[:6]}"
    conf = yaml.safe_load(usecase_path("fraud").read_text())
    conf["name"] = name
    uc_file = tmp_path / f"{name}.yaml"
    uc_file.write_text(yaml.safe_dump(conf, sort_keys=False))
    lake, mlflow_home = tmp_path / "lake", tmp_path / "mlflow"
    sets = [f"lake_root={lake}", f"checkpoint_root={tmp_path / 'checkpoints'}", f"mlflow.home={mlflow_home}",
            f"kafka.bootstrap_servers={broker.bootstrap}", "spark.ui_enabled=false", "spark.shuffle_partitions=2"]
    cmd = [str(PROJECT_ROOT / ".venv" / "bin" / "driftline")]
    for item in sets:
        cmd += ["--set", item]
    cmd += ["demo", "--usecase", str(uc_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    out = res.stdout
    (tmp_path / "demo-output.txt").write_text(out + res.stderr)  # what the user saw, for a failure's post-mortem
    log = (tmp_path / "demo" / "loop.log")
    assert res.returncode == 0, f"{out[-4000:]}\n{res.stderr[-4000:]}\n{log.read_text()[-4000:] if log.exists() else ''}"

    # every phase, in order
    marks = ["[1/5 history]", "[2/5 batch]", "[3/5 live]", "live stream on", "drift scenario on", "ALERT",
             "retraining on alert", "in shadow", "RAMP", "[4/5 live]", "Summary", "[5/5 report]"]
    positions = [out.find(m) for m in marks]
    assert all(p >= 0 for p in positions), {m: p for m, p in zip(marks, positions, strict=True)}
    assert positions == sorted(positions), out
    assert "PROMOTE" in out or "RETIRE" in out

    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    settled = summary["settled"]
    assert settled["action"] in ("promote", "retire") and settled["reason"]

    # the summary equals the tables (read here with delta-rs) and the registry
    preds = DeltaTable(str(lake / "predictions" / name)).to_pandas(
        columns=["event_id", "served", "route", "model_version"])
    by_route = {f"{r} v{v}": int(n) for (r, v), n in preds.groupby(["route", "model_version"]).size().items()}
    assert summary["predictions_by_route"] == by_route
    served = preds[preds["served"]]
    # nothing lost, nothing twice: every acknowledged live event served exactly once, across every switch
    assert served["event_id"].is_unique
    assert len(served) == summary["live_events"] == summary["served_event_ids"]
    assert len({k for k in by_route if not k.startswith("champion")}) >= 1  # the challenger scored too

    audit = DeltaTable(str(lake / "audit" / f"{name}_model_events")).to_pandas().sort_values("event_time")
    assert [e["action"] for e in summary["model_events"]] == list(audit["action"])
    actions = list(audit["action"])
    assert "retrain_triggered" in actions and "shadow_start" in actions and "ramp" in actions
    # the last decision (a promotion records the routing change after it, as a `route` row)
    assert [a for a in actions if a != "route"][-1] == settled["action"]
    alerts = DeltaTable(str(lake / "monitoring" / f"{name}_alerts")).to_pandas()
    assert sorted(alerts["alert_id"]) == summary["alerts"] and len(alerts) >= 1

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_home / 'mlflow.db'}",
                          registry_uri=f"sqlite:///{mlflow_home / 'mlflow.db'}")
    model = client.get_registered_model(f"{name}-model")
    assert int(model.aliases["champion"]) == summary["champion"]
    assert summary["champion"] == (settled["challenger_version"] if settled["action"] == "promote" else 1)

    # the history champion (v1): a test set with >= 50 frauds, precision and recall above 0.3
    v1 = client.get_run(client.get_model_version(f"{name}-model", "1").run_id).data.metrics
    assert v1["test_tp"] + v1["test_fn"] >= 50
    assert v1["test_precision"] > 0.3 and v1["test_recall"] > 0.3

    report = Path(out.split("[5/5 report] ")[1].split()[0])
    assert report.is_file() and "<svg" in report.read_text()
