"""The live demo's narration of the loop's status file: a retrain is announced when it
starts (the minutes it takes are not silent), once, and its result when it is done; the
status line says a retrain is running."""

from __future__ import annotations

from driftline.demo import DemoProgress, _narrate


def lines_after(*statuses: dict[str, object]) -> list[str]:
    out: list[str] = []
    progress = DemoProgress(echo=out.append)
    for status in statuses:
        _narrate(progress, status)
    return [line.split("] ", 1)[1] for line in out]


def test_a_retrain_is_announced_when_it_starts_then_its_result_when_done() -> None:
    running = {"retraining": {"alert_id": "a1", "at": 1.0}, "retrains": []}
    done = {"retraining": None, "retrains": [{"alert_id": "a1", "action": "retrained",
                                              "detail": "new challenger v2 (shadow_start)"}]}
    assert lines_after(running, running, done) == [
        "retraining on alert a1: ingest → validate → features → train → gate (a few minutes beside the queries)",
        "retrain on alert a1: retrained, new challenger v2 (shadow_start)",
    ]


def test_a_retrain_missed_between_two_reads_is_still_announced_before_its_result() -> None:
    done = {"retrains": [{"alert_id": "a1", "action": "retrained", "detail": "new challenger v2 (shadow_start)"},
                         {"alert_id": "a2", "action": "skipped", "detail": "challenger v2 is in progressive delivery"}]}
    assert lines_after(done) == [
        "retraining on alert a1: ingest → validate → features → train → gate (a few minutes beside the queries)",
        "retrain on alert a1: retrained, new challenger v2 (shadow_start)",
        "retrain on alert a2: skipped, challenger v2 is in progressive delivery",
    ]


def test_the_status_line_says_a_retrain_is_running() -> None:
    out: list[str] = []
    progress = DemoProgress(echo=out.append)
    progress.status({"phase": "scoring + monitoring", "retraining": {"alert_id": "a1"}, "champion": 1}, "no drift")
    assert "scoring + monitoring + retraining | produced 0" in out[0]
