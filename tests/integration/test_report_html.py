"""``driftline report`` on a small lake with known values, the page opened in headless
Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by bin/ensure-system)
through Selenium: it loads without a console error, fetches nothing, every chart of
:data:`driftline.html_report.CHARTS` is there and drawn, and the known values are on it.

The lake is the notebook test's (``test_notebooks.py``: predictions in shadow mode,
two drift windows, quality, performance, one alert, query metrics, the audit and a
registry with v1 champion and v2 challenger) plus what only the report shows:
routing changes, validate runs, streaming quarantine, labels and a reference profile.

Why Selenium rather than ``chromium --headless --dump-dom --enable-logging=stderr``:
chromedriver hands back the page's console through the DevTools log with a level per
message (``SEVERE`` for console.error, uncaught exceptions and failed loads), while the
stderr log mixes them with Chromium's own noise in a format that changes between
releases; and the DOM can be queried for the rendered size of each chart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import write_deltalake

# the notebook test's lake with known values (pytest puts this directory on sys.path)
from test_notebooks import ALERT_ID, TS, UC, at, registry
from test_notebooks import alerts as write_alerts
from test_notebooks import drift as write_drift
from test_notebooks import predictions as write_predictions
from test_notebooks import quality_and_performance as write_quality_and_performance
from test_notebooks import queries_and_audit as write_queries_and_audit

from driftline.cli import main
from driftline.html_report import CHARTS

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
REFERENCE_COUNTS = [5, 20, 30, 20, 10, 5, 4, 3, 2, 1]  # v1's test-split scores per bin of 0.1


def _extra_tables(lake: Path) -> None:
    """Routing changes in the audit, two validate runs, streaming quarantine and labels."""
    audit = pa.schema([("event_time", TS), ("action", pa.string()), ("model_name", pa.string()),
                       ("from_version", pa.int32()), ("to_version", pa.int32()), ("reason", pa.string()),
                       ("metrics", pa.map_(pa.string(), pa.float64())), ("run_id", pa.string())])
    routes = [(30, "routing champion/0 -> shadow/1", 1.0), (150, "routing shadow/1 -> canary/0.25", 0.25)]
    write_deltalake(str(lake / f"audit/{UC}_model_events"), pa.Table.from_pylist([
        {"event_time": at(t), "action": "route", "model_name": "fraud-model", "from_version": None,
         "to_version": None, "reason": reason, "metrics": [("share", share)], "run_id": None}
        for t, reason, share in routes], schema=audit), mode="append")

    validation = pa.schema([
        ("run_id", pa.string()), ("run_time", TS), ("usecase", pa.string()), ("dataset", pa.string()),
        ("records_in", pa.int64()), ("records_good", pa.int64()), ("records_quarantined", pa.int64()),
        ("duplicates", pa.int64()), ("quarantine_rate", pa.float64()), ("duplicate_rate", pa.float64()),
        ("reason_counts", pa.map_(pa.string(), pa.int64())), ("status", pa.string()),
    ])
    runs = [("r1", 0, "events", 1000, 20, 10, [("not_json", 12), ("duplicate", 8)]),
            ("r1", 0, "labels", 100, 1, 0, [("missing_field:is_fraud", 1)]),
            ("r2", 3600, "events", 1000, 50, 10, [("not_json", 40), ("duplicate", 10)])]
    write_deltalake(str(lake / f"monitoring/{UC}_validation"), pa.Table.from_pylist([
        {"run_id": r, "run_time": at(t), "usecase": UC, "dataset": ds, "records_in": n,
         "records_good": n - q, "records_quarantined": q, "duplicates": d, "quarantine_rate": q / n,
         "duplicate_rate": d / n, "reason_counts": reasons, "status": "ok"}
        for r, t, ds, n, q, d, reasons in runs], schema=validation))

    write_deltalake(str(lake / f"quarantine/{UC}_events_stream"), pa.table({
        "value": ["{", "{}", "x"], "reason": ["not_json", "missing_field:amount", "not_json"],
        "quarantined_at": pa.array([at(5)] * 3, type=TS)}))

    # e1..e5 scored by champion v1 [0.1, 0.7, 0.2, 0.9, 0.3], e1..e3 by shadow v2 [0.2, 0.4, 0.3]:
    # champion precision 1.0, recall 2/3, ROC AUC 5/6 on these labels
    write_deltalake(str(lake / f"silver/{UC}_labels"), pa.table({
        "event_id": [f"e{i}" for i in range(1, 6)], "is_fraud": pa.array([0, 1, 1, 1, 0], type=pa.int32()),
        "label_time": pa.array([at(600)] * 5, type=TS)}))


def _reference_profile(mlflow_home: Path) -> None:
    """The champion's score distribution, as jobs/train.py logs it with the model."""
    from driftline.config import load_platform
    from driftline.registry import client_for

    client = client_for(load_platform(overrides=[f"mlflow.home={mlflow_home}"], env={}))
    run_id = client.get_model_version("fraud-model", "1").run_id
    edges = [round(0.1 * i, 1) for i in range(1, 10)]
    client.log_dict(run_id, {"version": 2, "bins": 10, "numeric": {}, "categorical": {},
                             "prediction": {"column": "score", "edges": edges, "counts": REFERENCE_COUNTS,
                                            "null_count": 0}}, "reference_profile.json")


def _model_card(mlflow_home: Path) -> None:
    """The champion's model card, as jobs/train.py writes it at registration (driftline.model_card)."""
    from driftline.config import load_platform
    from driftline.model_card import CARD_JSON
    from driftline.registry import client_for

    client = client_for(load_platform(overrides=[f"mlflow.home={mlflow_home}"], env={}))
    run_id = client.get_model_version("fraud-model", "1").run_id
    client.log_dict(run_id, {
        "model": "fraud-model", "version": 1, "run_id": run_id, "usecase": UC, "created": "2024-05-01T11:00:00Z",
        "estimator": "logistic_regression", "label": {"field": "is_fraud", "kind": "binary"},
        "intended_use": "Flags card transactions for review.", "decision_threshold": 0.27,
        "training_data": [{"role": "training table", "path": "/lake/gold/fraud_features_offline", "version": 7,
                           "rows": {"train": 700, "validation": 150, "test": 150}}],
        "metrics": {"overall": {"precision": 0.5, "recall": 0.6, "f1": 0.5454, "roc_auc": 0.93, "pr_auc": 0.4,
                                "rows": 150.0, "positives": 10.0, "threshold": 0.27},
                    "slices": [{"column": "channel", "value": "atm", "precision": 0.25, "recall": 1.0, "f1": 0.4,
                                "roc_auc": 0.9, "pr_auc": 0.3, "rows": 12.0, "positives": 1.0, "threshold": 0.27,
                                "too_small": True}]},
        "features": ["amount", "channel=atm"],
        "feature_weights": {"kind": "coefficients", "note": "per standard deviation",
                            "values": [{"feature": "amount", "value": 1.25}, {"feature": "channel=atm", "value": -0.5}]},
        "limits": ["fewer than 50 test positives (10 of 150 rows)"]}, CARD_JSON)


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    """The report points MLflow's process-wide URIs at this test's store: put them back."""
    import mlflow

    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, collecting the page's console (DevTools log)."""
    chromium, driver_exe = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if not (chromium and driver_exe):  # never a skip: the report's test must run where `make test` runs
        pytest.fail("chromium and chromium-driver are not installed: run bin/ensure-system "
                    "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: .venv/bin/pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver path given: Selenium Manager never looks for (or downloads) a driver
    driver = webdriver.Chrome(service=Service(driver_exe), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, path: Path) -> list[dict[str, Any]]:
    """Load ``path`` and return what the page wrote to the console while loading."""
    browser.get_log("browser")  # drop anything left from an earlier page
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    return list(browser.get_log("browser"))


def test_the_console_check_sees_errors(browser: Any, tmp_path: Path) -> None:
    """The check below would miss nothing: a console.error, an exception, a missing file."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
                    '<script>console.error("boom"); undefinedFunction();</script><img src="missing.png"></body></html>')
    messages = " | ".join(m["message"] for m in _open(browser, page) if m["level"] == "SEVERE")
    assert '"boom"' in messages and "undefinedFunction" in messages and "missing.png" in messages, messages


@pytest.mark.timeout(120)
def test_report_renders_every_chart_in_headless_chromium(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    lake, mlflow_home = tmp_path / "lake", tmp_path / "mlflow"
    for write in (write_predictions, write_drift, write_quality_and_performance, write_alerts, write_queries_and_audit,
                  _extra_tables):
        write(lake)
    registry(mlflow_home)
    _reference_profile(mlflow_home)
    _model_card(mlflow_home)

    start = time.monotonic()
    result = CliRunner().invoke(main, ["--set", f"lake_root={lake}", "--set", f"mlflow.home={mlflow_home}",
                                       "report", "--usecase", UC])
    elapsed = time.monotonic() - start
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "reports" / f"{UC}.html"  # next to the lake by default

    console = _open(browser, path)
    assert [m for m in console if m["level"] in ("SEVERE", "WARNING")] == [], console
    assert browser.title == f"driftline report: {UC}"
    # nothing fetched: no stylesheet, script, font or image comes from anywhere
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.execute_script(  # ids unique across the page's SVGs
        "const n = {}; for (const e of document.querySelectorAll('[id]')) n[e.id] = (n[e.id] || 0) + 1;"
        "return Object.keys(n).filter(k => n[k] > 1)") == []

    figures = browser.find_elements(By.CSS_SELECTOR, "figure[id^='chart-']")
    assert [f.get_attribute("id") for f in figures] == [f"chart-{name}" for name in CHARTS]
    for fig in figures:
        svg = fig.find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 100, (fig.get_attribute("id"), svg.size)
        assert fig.find_element(By.TAG_NAME, "figcaption").text
    assert browser.find_elements(By.CSS_SELECTOR, "p.empty") == []

    summary = browser.find_element(By.ID, "summary").text
    assert "champion\nv1 — test roc_auc 0.93" in summary and "challenger\nv2 — test roc_auc 0.95" in summary
    assert "alerts\n1 alert" in summary and "1 of 2 windows with a drifted feature" in summary
    assert "p50 3,000 ms p95 4,800 ms p99 4,960 ms" in summary
    assert "canary 0.25 since 2024-05-01 12:02:30 UTC" in summary
    assert "2024-05-01 12:00:00 – 2024-05-01 14:00:00 UTC" in summary  # event time covered

    alerts_table = browser.find_element(By.ID, "table-alerts").text
    assert ALERT_ID in alerts_table and "drift:amount psi=0.45" in alerts_table
    events = browser.find_element(By.ID, "table-model-events").text
    assert "routing shadow/1 -> canary/0.25" in events and "share=0.25" in events and "gate passed" in events

    def chart_text(name: str) -> str:
        return browser.find_element(By.ID, f"chart-{name}").get_attribute("textContent")

    assert "amount" in chart_text("drift-heatmap") and "channel" in chart_text("psi-trend")
    assert "reference (champion v1)" in chart_text("score-distribution")
    assert "0.833" in chart_text("champion-challenger")  # champion v1's ROC AUC on the labelled events
    assert "served by v1" in chart_text("performance")
    assert "not_json" in chart_text("validation") and "52" in chart_text("validation")  # 12 + 40 batch
    assert "score_fraud" in chart_text("throughput")
    assert "alert #1" in chart_text("alerts")
    # the champion's model card: intended use, data, metrics per slice, weights by feature, limits
    assert browser.find_element(By.ID, "card-intended-use").text == "Flags card transactions for review."
    assert "/lake/gold/fraud_features_offline" in browser.find_element(By.ID, "table-card-data").text
    card_metrics = browser.find_element(By.ID, "table-card-metrics").text
    assert "overall" in card_metrics and "channel=atm" in card_metrics and "too few rows" in card_metrics
    assert "channel=atm -0.5" in browser.find_element(By.ID, "table-card-weights").text
    assert "fewer than 50 test positives" in browser.find_element(By.ID, "card-limits").text
    assert elapsed < 30, f"the report took {elapsed:.0f}s"


@pytest.mark.timeout(120)
def test_report_of_an_empty_lake_says_what_is_missing(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    out = tmp_path / "out" / "eta.html"
    result = CliRunner().invoke(main, ["--set", f"lake_root={tmp_path / 'lake'}", "--set",
                                       f"mlflow.home={tmp_path / 'mlflow'}", "report", "--usecase", "eta",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == out
    assert not (tmp_path / "mlflow").exists()  # looking did not create a store

    console = _open(browser, out)
    assert [m for m in console if m["level"] in ("SEVERE", "WARNING")] == [], console
    assert browser.find_elements(By.CSS_SELECTOR, "figure") == []
    notes = {p.get_attribute("id"): p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.empty")}
    assert set(notes) == {f"empty-{name}" for name in CHARTS} | {"empty-alerts-table"}
    assert notes["empty-drift-heatmap"] == "monitoring/eta_drift: no table yet"
    assert notes["empty-alerts-table"] == "monitoring/eta_alerts: no table yet"
    assert "no MLflow store" in browser.find_element(By.ID, "note-model-card").text
    assert "no MLflow store" in browser.find_element(By.ID, "summary").text


def test_report_without_a_reachable_registry_falls_back_to_the_audit(tmp_path: Path) -> None:
    """A tracking server that does not answer: a note in seconds, versions and metrics from the audit."""
    from driftline.config import load_platform
    from driftline.html_report import load_data, registered_metrics

    lake = tmp_path / "lake"
    write_queries_and_audit(lake)
    platform = load_platform(overrides=[f"lake_root={lake}", "mlflow.tracking_uri=http://127.0.0.1:9"], env={})
    start = time.monotonic()
    data = load_data(platform, UC)
    assert time.monotonic() - start < 20
    assert data.versions is None
    assert data.registry_note.startswith("MLflow registry at http://127.0.0.1:9 not reachable"), data.registry_note
    got = registered_metrics(data.versions, data.get("events"))
    assert list(got.index) == ["champion v1", "challenger v2"] and got["roc_auc"].tolist() == [0.9, 0.9]
