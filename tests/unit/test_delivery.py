"""The pure parts of driftline.delivery: stages, the stage start from the audit, the looks
that keep the error rate at alpha, the test and metric a use case gets, the decision's
audit map; and the report's delivery table."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from driftline import delivery as dl
from driftline import evidence
from driftline import html_report as hr
from driftline.config import load_usecase
from driftline.errors import ConfigError

T0 = datetime(2026, 1, 1, 12, 0, 0)


def test_next_stage_follows_the_steps_and_a_share_set_by_hand() -> None:
    steps = (0.05, 0.25, 0.5)
    assert dl.next_stage(steps, dl.Stage("shadow", 0.0, None)) == ("canary", 0.05)
    assert dl.next_stage(steps, dl.Stage("canary", 0.05, None)) == ("canary", 0.25)
    assert dl.next_stage(steps, dl.Stage("canary", 0.3, None)) == ("canary", 0.5)  # `driftline route` by hand
    assert dl.next_stage(steps, dl.Stage("canary", 0.5, None)) == ("champion", None)
    assert dl.next_stage(steps, dl.Stage("canary", 0.8, None)) == ("champion", None)
    assert dl.next_stage((), dl.Stage("shadow", 0.0, None)) == ("champion", None)


def _ev(action: str, minutes: int, to: int | None = None) -> dict[str, object]:
    return {"action": action, "event_time": T0 + timedelta(minutes=minutes), "to_version": to}


def test_stage_start_is_the_newest_row_that_changed_the_stage() -> None:
    audit = [_ev("register", 0, 1), _ev("promote", 1, 1), _ev("register", 2, 2), _ev("route", 3),
             _ev("shadow_start", 4, 2), _ev("register", 5, 3), _ev("gate_refused", 6, 3)]
    assert dl.stage_start(audit, 2) == T0 + timedelta(minutes=4)
    assert dl.delivery_start(audit, 2) == T0 + timedelta(minutes=4)
    audit += [_ev("route", 7), _ev("ramp", 8, 2)]
    assert dl.stage_start(audit, 2) == T0 + timedelta(minutes=8)
    audit += [_ev("route", 9)]  # by hand, after the ramp: a new stage
    assert dl.stage_start(audit, 2) == T0 + timedelta(minutes=9)
    assert dl.delivery_start(audit, 2) == T0 + timedelta(minutes=4)
    # a challenger set by hand (register, then route) starts at its own registration
    assert dl.stage_start([_ev("route", 0), _ev("register", 3, 5)], 5) == T0 + timedelta(minutes=3)


def test_looks_double_their_sample_and_halve_their_level() -> None:
    spec = load_usecase("fraud").delivery.model_copy(update={"min_labels": 10, "min_positives": 2})
    y = np.array([0.0] * 9 + [1.0])
    assert dl._look(y, spec, True) == (0, 0, 0, 1)  # 10 events but 1 positive: one more needed
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1] + [0] * 10, dtype=float)
    k, size, need_n, need_p = dl._look(y, spec, True)
    # look 1: the first 10 events (2 positives); look 2 needs 20 events with 4 positives: 17 have 4
    assert (k, size) == (2, 20) and need_n == 40 - len(y)
    assert sum(spec.alpha / 2 ** j for j in range(1, 30)) <= spec.alpha
    regression = load_usecase("eta").delivery.model_copy(update={"min_labels": 10})
    assert dl._look(np.arange(35.0), regression, False) == (2, 20, 5, None)


def test_each_label_kind_gets_its_test_and_metric() -> None:
    fraud, eta = load_usecase("fraud"), load_usecase("eta")
    assert dl.choose_test(fraud, fraud.delivery) == ("delong", "roc_auc")
    assert dl.choose_test(eta, eta.delivery) == ("paired_abs_error", "mae")
    assert dl.choose_test(eta, eta.delivery.model_copy(update={"test": "bootstrap"})) == ("bootstrap", "rmse")
    with pytest.raises(ConfigError, match="delivery.metric"):
        dl.choose_test(fraud, fraud.delivery.model_copy(update={"metric": "rmse"}))
    with pytest.raises(ConfigError, match="binary"):
        dl.choose_test(eta, eta.delivery.model_copy(update={"test": "delong"}))


def test_the_decision_carries_its_evidence_into_the_audit_map_and_json() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(float)
    a, b = y + rng.normal(0, 1, 400), y + rng.normal(0, 0.9, 400)
    ev = evidence.delong_test(y, a, b, margin=0.02, alpha=0.025)
    d = dl.StageDecision(usecase="fraud", action="advance", reason="not worse", stage="canary", share=0.25,
                         next_stage="canary", next_share=0.5, champion_version=1, challenger_version=2,
                         stage_start=T0, evaluated_at=T0 + timedelta(minutes=5), test="delong", metric="roc_auc",
                         look=1, alpha_look=0.025, labelled=400, positives=int(y.sum()), evidence=ev,
                         champion=dl.ModelRows(1, 410, 0.0, ev.champion), challenger=dl.ModelRows(2, 410, 0.0, ev.challenger),
                         guardrails={"metric_drop": -0.01})
    m = d.audit_metrics()
    assert m["champion_roc_auc"] == ev.champion and m["challenger_roc_auc"] == ev.challenger
    assert (m["difference"], m["se"], m["bound"], m["p_value"], m["n"]) == (ev.difference, ev.se, ev.bound,
                                                                              ev.p_value, 400)
    assert m["share"] == 0.25 and m["positives"] == y.sum() and m["guardrail_metric_drop"] == -0.01
    back = json.loads(dl.to_json(d))
    assert back["action"] == "advance" and back["evidence"]["verdict"] == ev.verdict
    assert back["stage_start"] == T0.isoformat()
    assert "look 1 on 400 events" in d.describe()


def test_the_report_puts_both_models_of_an_evaluation_on_one_row() -> None:
    at = pd.Timestamp("2026-01-01 12:00:00")
    rows = []
    for i, action in enumerate(["hold", "advance"]):
        for model, version, value in (("champion", 1, 0.80), ("challenger", 2, 0.84)):
            rows.append({"evaluated_at": at + pd.Timedelta(minutes=i), "stage": "shadow", "share": 0.0,
                         "model": model, "model_version": version, "n": 100 * (i + 1), "positives": 20,
                         "metric": "roc_auc", "value": value, "test": "delong", "look": i, "difference": 0.04,
                         "se": 0.01, "bound": 0.02, "p_value": 0.001, "verdict": "not_worse", "action": action})
    table = hr.delivery_evidence(pd.DataFrame(rows))
    assert table[["champion", "challenger", "labelled", "action"]].to_dict("list") == {
        "champion": ["v1", "v1"], "challenger": ["v2", "v2"], "labelled": [100, 200], "action": ["hold", "advance"]}
    assert table["champion value"].tolist() == [0.80, 0.80] and table["challenger value"].tolist() == [0.84, 0.84]


def test_an_alert_raised_before_the_latest_change_of_champion_is_stale() -> None:
    from driftline.alerts import Alert
    from driftline.pipelines.retrain import stale

    def alert(created: datetime) -> Alert:
        return Alert(alert_id="a", usecase="fraud", window_start=created, window_end=created, bad_windows=2,
                     windows=3, reasons=(), rule={}, created_at=created)

    promoted = datetime(2026, 12, 7, 20, 51, 0)  # naive UTC, as the audit rows are read
    earlier = datetime(2026, 12, 7, 20, 50, 55, 700000, tzinfo=UTC)
    assert stale(alert(earlier), (2, promoted)) == (
        "raised at 20:50:55 before v2 became champion at 20:51:00 UTC: it judged the previous model; "
        "v2 is watched by its own windows")
    assert stale(alert(earlier), None) is None                                   # no champion change yet
    assert stale(alert(promoted.replace(tzinfo=UTC)), (2, promoted)) is None     # at the change: the new one's
    # another time zone: compared in UTC (20:50:59 UTC is before the change)
    cet = timezone(timedelta(hours=1))
    assert stale(alert(datetime(2026, 12, 7, 21, 50, 59, tzinfo=cet)), (2, promoted)) is not None
    assert stale(alert(datetime(2026, 12, 7, 21, 51, 1, tzinfo=cet)), (2, promoted)) is None


def test_an_alert_judged_against_another_champions_reference_is_stale() -> None:
    """Seen in a demo run: the monitor batch running when v2 was promoted finished 3 s later, judged
    v2's canary scores against v1's reference (drift:score) and published an alert after the
    promotion; the time rule let it start a retrain of the new champion."""
    from driftline.alerts import Alert
    from driftline.pipelines.retrain import stale

    promoted = datetime(2026, 12, 8, 0, 35, 30)
    after = Alert(alert_id="a", usecase="fraud", window_start=promoted, window_end=promoted, bad_windows=3, windows=3,
                  reasons=(), rule={}, created_at=datetime(2026, 12, 8, 0, 35, 33, tzinfo=UTC), reference_version=1)
    assert stale(after, (2, promoted), champion=2) == (
        "the monitor judged its windows against v1's reference, and v2 is champion now: v2 is watched by its own "
        "windows")
    assert stale(after, (2, promoted), champion=1) is None                 # still the champion it judged
    assert stale(replace(after, reference_version=None), (2, promoted), champion=2) is None  # not known: time rule
    # seen in CI: the monitor restarted on v2's reference judged windows that v1 had served (its canary
    # at 50%) and raised an alert 25 s after the promotion: windows before the last event scored then
    window = datetime(2024, 1, 2, 23, 30, tzinfo=UTC)
    judged = replace(after, reference_version=2, window_start=window)
    served_until = datetime(2024, 1, 3, 2, 51, 43, tzinfo=UTC)
    assert stale(judged, (2, promoted), champion=2, served_until=served_until) == (
        "its windows start at 2024-01-02 23:30, before 2024-01-03 02:51:43, the newest event scored before v2 became "
        "champion: they judged the previous model's predictions; v2 is watched by its own windows")
    assert stale(replace(judged, window_start=served_until), (2, promoted), champion=2,
                 served_until=served_until) is None                       # windows of v2's own events
    assert stale(judged, None, champion=2, served_until=served_until) is None   # no change of champion yet
    # the version travels with the published alert
    assert Alert.from_json(after.to_json()).reference_version == 1
    assert "reference_version" not in replace(after, reference_version=None).to_dict()
