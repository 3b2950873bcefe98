"""notebooks/driftline_overview.ipynb executed end to end (nbclient, a real IPython
kernel running this venv's interpreter) against a temp lake of small Delta tables
with known values; the printed numbers and tables must be those values."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "driftline_overview.ipynb"
UC = "fraud"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
W1, W2 = T0, T0 + timedelta(hours=1)
TS = pa.timestamp("us", tz="UTC")  # what Spark's TIMESTAMP is in Delta
ALERT_ID = "fraud-20240501T140000Z"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _write(lake: Path, table: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    write_deltalake(str(lake / table), pa.Table.from_pylist(rows, schema=schema))


def predictions(lake: Path) -> None:
    """Shadow mode: e1..e5 served by champion v1, latencies 1..5 s; e1..e3 also scored by shadow v2."""
    schema = pa.schema([
        ("event_id", pa.string()), ("entity", pa.string()), ("event_time", TS), ("score", pa.float64()),
        ("prediction", pa.float64()), ("served", pa.bool_()), ("route", pa.string()), ("model_name", pa.string()),
        ("model_version", pa.int32()), ("batch_id", pa.int64()), ("scoring_time", TS), ("kafka_timestamp", TS),
    ])
    champion = [0.1, 0.7, 0.2, 0.9, 0.3]
    shadow = [0.2, 0.4, 0.3]  # same prediction as the champion for e1 and e3, not for e2
    rows = []
    for i, score in enumerate(champion, start=1):
        rows.append({"event_id": f"e{i}", "entity": f"c{i}", "event_time": at(10 * i), "score": score,
                     "prediction": float(score >= 0.5), "served": True, "route": "champion",
                     "model_name": "fraud-model", "model_version": 1, "batch_id": 0,
                     "kafka_timestamp": at(10 * i), "scoring_time": at(10 * i + i)})
    for i, score in enumerate(shadow, start=1):
        rows.append({**rows[i - 1], "score": score, "prediction": float(score >= 0.5), "served": False,
                     "route": "shadow", "model_version": 2})
    _write(lake, f"predictions/{UC}", rows, schema)


def batch_predictions(lake: Path) -> None:
    schema = pa.schema([("event_id", pa.string()), ("customer_id", pa.string()), ("event_time", TS),
                        ("prediction", pa.float64()), ("score", pa.float64()), ("model_name", pa.string()),
                        ("model_version", pa.int32()), ("batch_date", pa.string())])
    rows = [{"event_id": f"b{i}", "customer_id": f"c{i}", "event_time": at(i), "prediction": 0.0,
             "score": 0.1 * i, "model_name": "fraud-model", "model_version": 1, "batch_date": "2024-05-01"}
            for i in range(1, 5)]
    _write(lake, f"predictions/{UC}_batch", rows, schema)


def drift(lake: Path) -> None:
    """Two windows, two features; amount drifts in the second window."""
    schema = pa.schema([
        ("window_start", TS), ("window_end", TS), ("feature", pa.string()), ("kind", pa.string()),
        ("statistic", pa.string()), ("value", pa.float64()), ("p_value", pa.float64()),
        ("p_adjusted", pa.float64()), ("threshold", pa.float64()), ("drifted", pa.bool_()),
        ("n_reference", pa.int64()), ("n_current", pa.int64()), ("computed_at", TS),
    ])
    values = {  # (window, feature): (psi, js, chi2, drifted)
        (W1, "amount"): (0.02, 0.01, 3.1, False), (W1, "channel"): (0.01, 0.005, 1.2, False),
        (W2, "amount"): (0.45, 0.12, 95.0, True), (W2, "channel"): (0.03, 0.01, 2.0, False),
    }
    rows = []
    for (ws, feature), (psi, js, chi2, drifted) in values.items():
        for stat, value, thr in (("psi", psi, 0.2), ("js", js, 0.1), ("chi2", chi2, 0.05)):
            rows.append({"window_start": ws, "window_end": ws + timedelta(hours=1), "feature": feature,
                         "kind": "numeric" if feature == "amount" else "categorical", "statistic": stat,
                         "value": value, "p_value": 0.001 if drifted else 0.5, "p_adjusted": 0.002 if drifted else 0.6,
                         "threshold": thr, "drifted": drifted and stat != "js", "n_reference": 1000,
                         "n_current": 200, "computed_at": W2 + timedelta(hours=1)})
    _write(lake, f"monitoring/{UC}_drift", rows, schema)


def quality_and_performance(lake: Path) -> None:
    q_schema = pa.schema([("window_start", TS), ("window_end", TS), ("metric", pa.string()), ("column", pa.string()),
                          ("value", pa.float64()), ("threshold", pa.float64()), ("breached", pa.bool_()),
                          ("computed_at", TS)])
    quality: list[dict[str, Any]] = []
    for ws, missing in ((W1, 0.01), (W2, 0.30)):
        base = {"window_start": ws, "window_end": ws + timedelta(hours=1), "computed_at": W2}
        quality += [{**base, "metric": "volume", "column": "predictions", "value": 200.0, "threshold": None,
                     "breached": False},
                    {**base, "metric": "missing_rate", "column": "amount", "value": missing, "threshold": 0.06,
                     "breached": missing > 0.06}]
    _write(lake, f"monitoring/{UC}_quality", quality, q_schema)
    p_schema = pa.schema([("window_start", TS), ("window_end", TS), ("metric", pa.string()), ("value", pa.float64()),
                          ("n", pa.int64()), ("threshold", pa.float64()), ("breached", pa.bool_()),
                          ("computed_at", TS)])
    performance = [{"window_start": ws, "window_end": ws + timedelta(hours=1), "metric": "roc_auc", "value": auc,
                    "n": 150, "threshold": 0.7, "breached": auc < 0.7, "computed_at": W2}
                   for ws, auc in ((W1, 0.91), (W2, 0.62))]
    _write(lake, f"monitoring/{UC}_performance", performance, p_schema)


def alerts(lake: Path) -> None:
    reason = pa.struct([("source", pa.string()), ("window_start", TS), ("window_end", TS), ("subject", pa.string()),
                        ("statistic", pa.string()), ("value", pa.float64()), ("threshold", pa.float64()),
                        ("p_adjusted", pa.float64())])
    schema = pa.schema([
        ("alert_id", pa.string()), ("usecase", pa.string()), ("window_start", TS), ("window_end", TS),
        ("bad_windows", pa.int32()), ("windows", pa.int32()), ("n", pa.int32()), ("m", pa.int32()),
        ("cooldown_windows", pa.int32()), ("retrain", pa.bool_()), ("reasons", pa.list_(reason)),
        ("topic", pa.string()), ("created_at", TS),
    ])
    row = {"alert_id": ALERT_ID, "usecase": UC, "window_start": W1, "window_end": W2 + timedelta(hours=1),
           "bad_windows": 1, "windows": 2, "n": 1, "m": 2, "cooldown_windows": 3, "retrain": True,
           "reasons": [{"source": "drift", "window_start": W2, "window_end": W2 + timedelta(hours=1),
                        "subject": "amount", "statistic": "psi", "value": 0.45, "threshold": 0.2,
                        "p_adjusted": 0.002}],
           "topic": f"{UC}.alerts", "created_at": W2 + timedelta(hours=1)}
    _write(lake, f"monitoring/{UC}_alerts", [row], schema)


def queries_and_audit(lake: Path) -> None:
    q_schema = pa.schema([
        ("query_name", pa.string()), ("query_id", pa.string()), ("run_id", pa.string()), ("batch_id", pa.int64()),
        ("timestamp", TS), ("num_input_rows", pa.int64()), ("input_rows_per_second", pa.float64()),
        ("processed_rows_per_second", pa.float64()), ("batch_duration_ms", pa.int64()),
        ("state_rows_total", pa.int64()), ("rows_dropped_by_watermark", pa.int64()), ("event_time_max", TS),
        ("watermark", TS), ("event_to_output_latency_ms", pa.int64()), ("app_name", pa.string()),
        ("recorded_at", TS),
    ])
    rows = [{"query_name": name, "query_id": f"{name}-id", "run_id": "r", "batch_id": b, "timestamp": at(60 * b),
             "num_input_rows": 1000, "input_rows_per_second": 900.0, "processed_rows_per_second": rate + 100.0 * b,
             "batch_duration_ms": 1000 + 10 * b, "state_rows_total": 0, "rows_dropped_by_watermark": 0,
             "event_time_max": at(60 * b), "watermark": at(60 * b), "event_to_output_latency_ms": 1500,
             "app_name": "t", "recorded_at": at(60 * b)}
            for name, rate in (("score_fraud", 5000.0), ("monitor_fraud_events", 8000.0)) for b in range(3)]
    _write(lake, "monitoring/queries", rows, q_schema)
    a_schema = pa.schema([("event_time", TS), ("action", pa.string()), ("model_name", pa.string()),
                          ("from_version", pa.int32()), ("to_version", pa.int32()), ("reason", pa.string()),
                          ("metrics", pa.map_(pa.string(), pa.float64())), ("run_id", pa.string())])
    events = [(0, "register", None, 1, "registered"), (60, "promote", None, 1, "gate passed"),
              (120, "register", 1, 2, "registered")]
    _write(lake, f"audit/{UC}_model_events", [
        {"event_time": at(t), "action": a, "model_name": "fraud-model", "from_version": f, "to_version": v,
         "reason": r, "metrics": [("roc_auc", 0.9)], "run_id": "run"} for t, a, f, v, r in events], a_schema)


def registry(mlflow_home: Path) -> None:
    """A local MLflow store with fraud-model v1 (alias champion, test_roc_auc 0.93) and v2 (challenger)."""
    from driftline.config import load_platform
    from driftline.registry import client_for

    platform = load_platform(overrides=[f"mlflow.home={mlflow_home}"], env={})
    client = client_for(platform)
    experiment = client.create_experiment("notebook-test", artifact_location=str(mlflow_home / "artifacts"))
    client.create_registered_model("fraud-model")
    for version, auc, alias in ((1, 0.93, "champion"), (2, 0.95, "challenger")):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test_roc_auc", auc)
        client.create_model_version("fraud-model", source=str(mlflow_home / "artifacts"), run_id=run.info.run_id)
        client.set_registered_model_alias("fraud-model", alias, str(version))


def outputs(nb: Any, tag: str) -> tuple[str, int]:
    """The text a tagged cell printed or displayed (text/plain), and how many images it showed."""
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    text, images = [], 0
    for out in cells[0].outputs:
        if out.output_type == "stream" and out.name == "stdout":
            text.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            text.append(out.data.get("text/plain", ""))
            images += "image/png" in out.data
    return "\n".join(text), images


def table_rows(text: str) -> dict[str, str]:
    """``name -> first value`` of a displayed frame indexed by name."""
    return {parts[0]: parts[1] for line in text.splitlines() if len(parts := line.split()) >= 2}


@pytest.fixture()
def kernel_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs this interpreter (the venv's), visible only to this test."""
    spec = tmp_path / "jupyter" / "kernels" / "driftline-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "driftline (venv)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "driftline-venv"


@pytest.mark.timeout(180)
def test_overview_notebook_shows_the_known_values(tmp_path: Path, kernel_path: str) -> None:
    lake = tmp_path / "lake"
    for write in (predictions, batch_predictions, drift, quality_and_performance, alerts, queries_and_audit):
        write(lake)
    registry(tmp_path / "mlflow")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "store it without outputs"
    probe = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    probe.metadata["tags"] = ["probe"]
    nb.cells.append(probe)
    env = {
        **os.environ, "DRIFTLINE_LAKE_ROOT": str(lake), "DRIFTLINE_USECASE": UC, "MPLBACKEND": "Agg",
        "DRIFTLINE_MLFLOW__HOME": str(tmp_path / "mlflow"), "IPYTHONDIR": str(tmp_path / "ipython"),
    }

    start = time.monotonic()
    NotebookClient(nb, timeout=120, kernel_name=kernel_path, resources={"metadata": {"path": str(tmp_path)}}
                   ).execute(env=env)
    elapsed = time.monotonic() - start

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert outputs(nb, "probe")[0].strip() == sys.executable

    counts = table_rows(outputs(nb, "counts")[0])
    assert counts[f"predictions/{UC}"] == "8"
    assert counts[f"predictions/{UC}_batch"] == "4"
    assert counts[f"monitoring/{UC}_drift"] == "12"
    assert counts["monitoring/queries"] == "6"
    assert counts[f"bronze/{UC}_events"] == "<NA>"

    versions = [line.split()[1:4] for line in outputs(nb, "registry")[0].splitlines()[1:]]
    assert versions == [["2", "challenger", "0.95"], ["1", "champion", "0.93"]]
    audit, audit_images = outputs(nb, "audit")
    timeline = [line.split()[3:6] for line in audit.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert timeline == [["register", "<NA>", "1"], ["promote", "<NA>", "1"], ["register", "1", "2"]]
    assert audit_images == 1

    text, images = outputs(nb, "predictions")
    assert "event-to-prediction latency (served, ms): p50=3000  p95=4800  p99=4960" in text
    shares = [line.split()[1:] for line in text.splitlines() if line.split()[1:2] in (["champion"], ["shadow"])]
    assert shares == [["champion", "1", "5", "1.0"], ["shadow", "2", "3", "0.6"]]
    assert images == 3

    text, images = outputs(nb, "shadow")
    assert float(table_rows(text)["n"]) == 3
    assert float(table_rows(text)["prediction_agreement"]) == pytest.approx(2 / 3)
    assert images == 1

    text, images = outputs(nb, "batch")
    assert "score mean: batch 0.2500, online 0.4400" in text and images == 1

    text, images = outputs(nb, "drift")
    assert "drifted windows: 1 of 2" in text
    drifted = [line for line in text.splitlines() if "2024-05-01 13:00:00" in line]
    assert len(drifted) == 1 and drifted[0].split()[-1] == "amount"
    assert images == 1

    text, images = outputs(nb, "quality")
    assert "breached quality rows: 1" in text and "missing_rate[amount]" in text and images == 1
    text, images = outputs(nb, "performance")
    assert "breached performance rows: 1" in text and "0.62" in text and images == 1
    assert ALERT_ID in outputs(nb, "alerts")[0]
    text, images = outputs(nb, "queries")
    assert "score_fraud" in text and "monitor_fraud_events" in text and images == 1
    assert elapsed < 60, f"the notebook took {elapsed:.0f}s"


@pytest.mark.timeout(180)
def test_overview_notebook_on_an_empty_lake_skips_every_section(tmp_path: Path, kernel_path: str) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "DRIFTLINE_LAKE_ROOT": str(tmp_path / "lake"), "DRIFTLINE_USECASE": "eta",
           "MPLBACKEND": "Agg", "DRIFTLINE_MLFLOW__HOME": str(tmp_path / "mlflow"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    NotebookClient(nb, timeout=120, kernel_name=kernel_path, resources={"metadata": {"path": str(tmp_path)}}
                   ).execute(env=env)

    assert [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"] == []
    counts = table_rows(outputs(nb, "counts")[0])
    assert counts["predictions/eta"] == "<NA>" and counts["monitoring/eta_drift"] == "<NA>"
    for tag, note in [("registry", "no model versions yet"), ("audit", "audit/eta_model_events: no table yet"), ("predictions", "predictions/eta: no table yet"),
                      ("shadow", "no shadow predictions"), ("batch", "predictions/eta_batch: no table yet"),
                      ("drift", "monitoring/eta_drift: no table yet"), ("alerts", "monitoring/eta_alerts: no table yet"),
                      ("queries", "monitoring/queries: no table yet")]:
        text, images = outputs(nb, tag)
        assert note in text and len(text.strip().splitlines()) == 1 and images == 0, (tag, text)
