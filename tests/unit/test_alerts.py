"""The N-of-M alert rule as pure functions, its configuration errors, alert ids and JSON,
and the query-metrics row built from a streaming progress."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from driftline.alerts import (
    Alert,
    AlertRule,
    Reason,
    WindowStatus,
    alert_id,
    alert_rule,
    build_alerts,
    fire_points,
)
from driftline.cli import main
from driftline.config import UseCaseConfig, load_usecase
from driftline.errors import ConfigError
from driftline.pipelines import retrain as pipeline
from driftline.query_metrics import format_table, progress_row

T0 = datetime(2024, 2, 1, tzinfo=UTC)


def windows(pattern: str, minutes: int = 1) -> list[WindowStatus]:
    """``"..x.xx"``: one window per character, ``x`` bad (amount drifted), ``.`` good."""
    out = []
    for i, c in enumerate(pattern):
        start, end = T0 + timedelta(minutes=i * minutes), T0 + timedelta(minutes=(i + 1) * minutes)
        reasons = (Reason("drift", start, end, "amount", "psi", 0.4, 0.2, 0.001),) if c == "x" else ()
        out.append(WindowStatus(start, end, reasons))
    return out


@pytest.mark.parametrize(("pattern", "rule", "expected"), [
    ("...", AlertRule(), []),
    ("x..", AlertRule(), []),                       # one bad window is not two
    ("x.x", AlertRule(), [2]),                      # 2 of the last 3
    ("x..x", AlertRule(), []),                      # the first bad one fell out of the last 3
    ("xx", AlertRule(), [1]),                       # fewer than m windows so far still count
    (".xxxxxxx", AlertRule(), [2, 6]),              # cooldown m=3: next alert 4 windows later
    (".xxxxxxx", AlertRule(cooldown_windows=0), [2, 3, 4, 5, 6, 7]),
    (".xxxxxxx", AlertRule(cooldown_windows=1), [2, 4, 6]),
    ("xx.", AlertRule(n=3, m=3), []),
    ("xxx", AlertRule(n=3, m=3), [2]),
    ("x.x.", AlertRule(n=1, m=1, cooldown_windows=0), [0, 2]),
    ("xx.xx", AlertRule(n=2, m=2, cooldown_windows=0), [1, 4]),  # a good window breaks a 2-of-2 run
])
def test_n_of_m_rule(pattern: str, rule: AlertRule, expected: list[int]) -> None:
    assert fire_points(windows(pattern), rule) == expected


def test_rule_rejects_unordered_windows() -> None:
    ws = windows("xx")
    with pytest.raises(ValueError, match="ordered by window_end"):
        fire_points([ws[1], ws[0]], AlertRule())


def test_alerts_carry_the_window_range_reasons_and_a_deterministic_id() -> None:
    ws = windows(".x.x")
    later = T0 + timedelta(days=1)
    first = build_alerts("fraud", ws, AlertRule(), created_at=T0)
    again = build_alerts("fraud", ws, AlertRule(), created_at=later)
    assert [a.alert_id for a in first] == [a.alert_id for a in again] == [alert_id("fraud", ws[3].window_end)]
    alert = first[0]
    assert (alert.window_start, alert.window_end) == (ws[1].window_start, ws[3].window_end)
    assert (alert.bad_windows, alert.windows) == (2, 3)
    assert [(r.window_end, r.subject) for r in alert.reasons] == [(ws[1].window_end, "amount"),
                                                                  (ws[3].window_end, "amount")]
    assert alert.rule == {"n": 2, "m": 3, "cooldown_windows": 3, "retrain": True,
                          "sources": ["drift", "quality", "performance"]}
    assert alert_id("fraud", ws[3].window_end) != alert_id("eta", ws[3].window_end)
    assert alert_id("fraud", ws[3].window_end) != alert_id("fraud", ws[2].window_end)
    # a naive datetime is taken as UTC: the id does not depend on how the time was read
    assert alert_id("fraud", ws[3].window_end.replace(tzinfo=None)) == alert.alert_id
    assert alert.alert_id.startswith("fraud-20240201T0004")


def test_alert_json_round_trip_and_malformed_messages() -> None:
    alert = build_alerts("fraud", windows("xx"), AlertRule(retrain=False), created_at=T0)[0]
    assert Alert.from_json(alert.to_json()) == alert
    assert Alert.from_json(alert.to_json().encode()).retrain is False
    with pytest.raises(ValueError, match="not JSON"):
        Alert.from_json(b"{nope")
    with pytest.raises(ValueError, match=r"missing keys \['window_start', 'window_end', 'created_at'\]"):
        Alert.from_json('{"alert_id": "a", "usecase": "fraud"}')
    with pytest.raises(ValueError, match="expected a JSON object"):
        Alert.from_json("[1]")


def with_alert(section: Any) -> UseCaseConfig:
    uc = load_usecase("fraud")
    return uc.replace(drift={**uc.raw("drift"), "alert": section})


def test_rule_defaults_and_config_errors_name_the_key() -> None:
    base = load_usecase("fraud")
    plain = base.replace(drift={})
    assert alert_rule(plain) == AlertRule(n=2, m=3)
    assert alert_rule(plain).cooldown == 3
    assert alert_rule(with_alert({"n": 1, "m": 4, "retrain": False, "cooldown_windows": 0})) == AlertRule(
        n=1, m=4, retrain=False, cooldown_windows=0)
    with pytest.raises(ConfigError, match=r"drift\.alert: n \(4\) must not exceed m \(3\)"):
        alert_rule(with_alert({"n": 4, "m": 3}))
    with pytest.raises(ConfigError, match=r"drift\.alert\.windows: unknown key \(value 5\)"):
        alert_rule(with_alert({"n": 2, "windows": 5}))
    with pytest.raises(ConfigError, match=r"drift\.alert\.m: got 0, expected: Input should be greater than or equal"):
        alert_rule(with_alert({"m": 0}))
    with pytest.raises(ConfigError, match=r"drift\.alert\.cooldown_windows: got 'soon'"):
        alert_rule(with_alert({"cooldown_windows": "soon"}))
    with pytest.raises(ConfigError, match=r"drift\.alert\.sources\.0: got 'latency'"):
        alert_rule(with_alert({"sources": ["latency"]}))
    with pytest.raises(ConfigError, match=r"drift\.alert: got 3, expected a mapping"):
        alert_rule(with_alert(3))


def test_shipped_use_cases_have_a_valid_rule() -> None:
    for name in ("fraud", "eta"):
        rule = alert_rule(load_usecase(name))
        assert 1 <= rule.n <= rule.m


# --------------------------------------------------------------------------- query metrics row


def progress(**over: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        id=uuid.UUID(int=1), runId=uuid.UUID(int=2), name="score", timestamp="2024-02-01T00:00:10.000Z",
        batchId=7, batchDuration=900, durationMs={"triggerExecution": 1500, "addBatch": 1000},
        eventTime={"max": "2024-02-01T00:00:09.000Z", "watermark": "2024-02-01T00:00:00.000Z"},
        stateOperators=[SimpleNamespace(numRowsTotal=10, numRowsDroppedByWatermark=1),
                        SimpleNamespace(numRowsTotal=5, numRowsDroppedByWatermark=2)],
        numInputRows=300, inputRowsPerSecond=float("nan"), processedRowsPerSecond=200.0,
    )
    return SimpleNamespace(**{**base, **over})


def test_progress_row() -> None:
    row = progress_row(progress(), app_name="app", now=T0)
    assert row == {
        "query_name": "score", "query_id": str(uuid.UUID(int=1)), "run_id": str(uuid.UUID(int=2)), "batch_id": 7,
        "timestamp": datetime(2024, 2, 1, 0, 0, 10, tzinfo=UTC), "num_input_rows": 300,
        "input_rows_per_second": None, "processed_rows_per_second": 200.0, "batch_duration_ms": 1500,
        "state_rows_total": 15, "rows_dropped_by_watermark": 3,
        "event_time_max": datetime(2024, 2, 1, 0, 0, 9, tzinfo=UTC),
        "watermark": datetime(2024, 2, 1, tzinfo=UTC),
        "event_to_output_latency_ms": 2500,  # 10 s + 1.5 s - 9 s
        "spark_jobs": None, "spark_stages": None,
        "app_name": "app", "recorded_at": T0,
    }
    counted = progress_row(progress(), app_name="app", now=T0, jobs=(5, 7))
    assert (counted["spark_jobs"], counted["spark_stages"]) == (5, 7)
    stateless = progress_row(progress(stateOperators=[], eventTime={}, durationMs={}), now=T0)
    assert stateless["state_rows_total"] is None and stateless["rows_dropped_by_watermark"] is None
    assert stateless["event_to_output_latency_ms"] is None and stateless["watermark"] is None
    assert stateless["batch_duration_ms"] == 900  # batchDuration when triggerExecution is missing


def test_format_table() -> None:
    assert format_table(["a", "bb"], [[1234, None], [1.25, "x"]]).splitlines() == ["a      bb", "1,234  -", "1.2    x"]


def test_pipeline_skips_alerts_already_handled_or_covered() -> None:
    alert = build_alerts("fraud", windows("xx"), AlertRule(), created_at=T0)[0]
    mine = pipeline.alert_reason(alert.alert_id)
    assert pipeline.already_handled([], alert) is None
    assert pipeline.already_handled([(T0 - timedelta(hours=1), "manual")], alert) is None
    assert "already triggered" in pipeline.already_handled([(T0 - timedelta(hours=1), mine)], alert)
    assert "already triggered" in pipeline.already_handled([(T0, f"{mine}; no fresh data")], alert)
    covered = pipeline.already_handled([(T0 + timedelta(minutes=1), "alert other")], alert)
    assert covered is not None and "covered by the retrain" in covered


def test_pipeline_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--usecase", "fraud"], "one of the arguments --once --on-alert is required"),
        (["--usecase", "fraud", "--once", "--on-alert"], "not allowed with argument"),
        (["--usecase", "fraud", "--once", "--max-alerts", "1"], "apply to --on-alert"),
        (["--usecase", "fraud", "--on-alert", "--max-alerts", "0"], "--max-alerts: expected at least 1"),
    ):
        with pytest.raises(SystemExit) as exc:
            pipeline.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert pipeline.main(["--usecase", "nope", "--once"]) == 2
    assert "usecase: 'nope' is not defined" in capsys.readouterr().err


# --------------------------------------------------------------------------- command line


def test_cli_on_an_empty_lake_says_so(tmp_path: Path) -> None:
    lake = ["--set", f"lake_root={tmp_path / 'lake'}"]
    out = CliRunner().invoke(main, [*lake, "queries"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"no query metrics in {tmp_path / 'lake'}/monitoring/queries"
    out = CliRunner().invoke(main, [*lake, "alerts", "list", "--usecase", "fraud"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"fraud: no alerts recorded in {tmp_path / 'lake'}/monitoring/fraud_alerts"
    assert CliRunner().invoke(main, [*lake, "queries", "--json"]).output.strip() == "[]"


def test_cli_alerts_check_names_a_bad_rule_before_starting_spark(tmp_path: Path) -> None:
    data = load_usecase("fraud").model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["drift"]["alert"] = {"n": 5, "m": 3}
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(main, ["alerts", "check", "--usecase", str(path)])
    assert out.exit_code == 2
    assert "drift.alert: n (5) must not exceed m (3)" in out.output
    help_text = CliRunner().invoke(main, ["alerts", "--help"]).output
    assert "check" in help_text and "list" in help_text and "N-of-M" in help_text
