"""The live demo's narration of the loop's status file: a retrain is announced when it
starts (the minutes it takes are not silent), once, and its result when it is done; the
status line says a retrain is running; the demo stops the loop through its Python driver."""

from __future__ import annotations

from pathlib import Path

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


def test_stop_loop_signals_the_python_driver_not_the_jvm(tmp_path: Path) -> None:
    """A stand-in for spark-submit: a parent that dies of SIGTERM (as the JVM does, exit 143) and
    otherwise exits with its Python child's code; the child exits 0 on SIGTERM, as the loop does."""
    import subprocess
    import sys
    import time

    from driftline.demo import python_children, stop_loop

    child = tmp_path / "driver.py"
    child.write_text("import signal, sys, time\n"
                     "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
                     "open(sys.argv[1], 'w').close()\n"
                     "time.sleep(60)\nsys.exit(5)\n")
    ready = tmp_path / "ready"
    parent = subprocess.Popen(["bash", "-c", f'"{sys.executable}" "{child}" "{ready}" & wait $!; exit $?'])
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    assert len(python_children(parent.pid)) == 1
    assert stop_loop(parent, wait_s=20) == 0  # the parent signalled instead would give 143

    # no Python child: the process itself is terminated
    lone = subprocess.Popen(["sleep", "60"])
    assert python_children(lone.pid) == []
    assert stop_loop(lone, wait_s=20) == -15
