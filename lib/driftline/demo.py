"""What ``make demo`` runs.

``run_demo``: the closed loop live, on the embedded defaults: 24 h of simulated history
published to Kafka, ``./spark-submit.sh jobs/pipeline.py --once`` (the champion), then
``streaming/loop.py`` (scoring, monitor, retraining on alerts, progressive delivery) while a
live stream with a drift scenario is published; a progress display, a summary read back
with delta-rs and MLflow, and the HTML report.

``run_smoke``: broker → JSON events → Structured Streaming → Delta, verified by
an independent Delta reader (delta-rs).

    run_smoke(load_platform(), events=10_000)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.config.usecase import usecase_path
from driftline.delta import count_local, read_local
from driftline.errors import MissingTableError, UsageError
from driftline.kafka.clients import ensure_topics, make_producer

log = logging.getLogger(__name__)

SMOKE_TOPIC = "smoke.events"


@dataclass(frozen=True)
class SmokeResult:
    run_id: str
    produced: int
    acked: int
    in_table: int
    distinct_in_table: int
    table: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.acked == self.produced == self.in_table == self.distinct_in_table


def produce_json_events(platform: PlatformConfig, topic: str, n: int, run_id: str) -> int:
    """Publish ``n`` small JSON events tagged with ``run_id``; return how many were acknowledged."""
    if n < 1:
        raise UsageError(f"n: expected a positive number of events, got {n}")
    producer = make_producer(platform.kafka)
    acked = 0
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            errors.append(str(err))

    for i in range(n):
        event = {"event_id": f"{run_id}-{i}", "run_id": run_id, "seq": i, "amount": round(i * 0.01, 2)}
        producer.produce(topic, key=str(i % 97), value=json.dumps(event), on_delivery=on_delivery)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    if errors:
        log.warning("%d delivery errors, first: %s", len(errors), errors[0])
    return acked


def stream_topic_to_delta(platform: PlatformConfig, topic: str, table: str, checkpoint: str) -> None:
    """Copy everything new on ``topic`` into the Delta table (trigger availableNow)."""
    from driftline.kafka.spark import raw_records, read_kafka_stream, write_delta_stream
    from driftline.session import build_session

    spark = build_session(platform, "driftline-smoke")
    raw = raw_records(read_kafka_stream(spark, platform.kafka, topic))
    query = write_delta_stream(raw, table, checkpoint, trigger="availableNow", query_name="smoke")
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")


def count_run_in_table(table: str, run_id: str) -> tuple[int, int]:
    """(rows, distinct event ids) of ``run_id`` in the table, read with delta-rs."""
    frame = read_local(table, ["value"])
    if frame is None:
        raise MissingTableError(f"no Delta table at {table}: the streaming query wrote nothing")
    events = (json.loads(v) for v in frame["value"])
    ids = [e["event_id"] for e in events if e.get("run_id") == run_id]
    return len(ids), len(set(ids))


@contextlib.contextmanager
def kafka_for_demo(platform: PlatformConfig, keep_broker: bool, echo: Callable[[str], None]) -> Iterator[None]:
    """Start the embedded broker if the config uses it; stop it afterwards unless it
    was already running or ``keep_broker`` is set."""
    from driftline.kafka.broker import EmbeddedBroker

    if not platform.kafka.uses_embedded:
        echo(f"[kafka] using {platform.kafka.bootstrap}")
        yield
        return
    broker = EmbeddedBroker.from_config(platform)
    was_running = broker.pid() is not None
    broker.start()
    echo(f"[kafka] broker {'already running' if was_running else 'started'} at {broker.bootstrap}")
    try:
        yield
    finally:
        if not (keep_broker or was_running):
            broker.stop()
            echo("[kafka] broker stopped (use --keep-broker to leave it running)")


def run_smoke(
    platform: PlatformConfig,
    events: int = 10_000,
    keep_broker: bool = False,
    echo: Callable[[str], None] = print,
) -> SmokeResult:
    """Run the smoke path end to end and report each step through ``echo``."""
    start = time.monotonic()
    with kafka_for_demo(platform, keep_broker, echo):
        ensure_topics(platform.kafka, [SMOKE_TOPIC])
        run_id = uuid.uuid4().hex[:8]
        acked = produce_json_events(platform, SMOKE_TOPIC, events, run_id)
        echo(f"1/3 published {events} JSON events to {SMOKE_TOPIC} (run {run_id}), {acked} acknowledged")
        table = catalog.path(platform, "smoke_events")
        stream_topic_to_delta(platform, SMOKE_TOPIC, table, catalog.checkpoint(platform, "smoke"))
        echo(f"2/3 Structured Streaming (Kafka -> Delta, availableNow) wrote {table}")
        rows, distinct = count_run_in_table(table, run_id)
        result = SmokeResult(run_id, events, acked, rows, distinct, table, time.monotonic() - start)
        verdict = "OK" if result.ok else "MISMATCH"
        echo(f"3/3 delta-rs reads {rows} rows, {distinct} distinct event ids for run {run_id}: {verdict}")
        echo(f"smoke path finished in {result.seconds:.1f}s")
        if not result.ok:
            raise RuntimeError(f"smoke path lost or duplicated events: {result}")
        return result


def submit(job: str, args: list[str], overrides: tuple[str, ...] = ()) -> None:
    """Run ``./spark-submit.sh JOB ARGS`` as a user would; raise with its stderr tail on failure."""
    cmd = [str(PROJECT_ROOT / "spark-submit.sh"), job, *args]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "DRIFTLINE_HOME": str(PROJECT_ROOT)}
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{job} exited with {res.returncode}:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")


def _events_in_topic(platform: PlatformConfig, topic: str) -> int:
    from driftline.kafka.clients import admin_client
    from driftline.kafka.spark import kafka_watermarks

    if topic not in admin_client(platform.kafka).list_topics(timeout=30).topics:
        return 0
    return sum(high - low for low, high in kafka_watermarks(platform.kafka, topic).values())


def _delta_rows(path: str) -> int:
    return count_local(path) or 0  # 0: a table a step did not write



# --------------------------------------------------------------------------- the closed-loop demo

# the tables the demo's summary shows (catalog keys), in pipeline order
DEMO_TABLES = (
    "bronze_events", "quarantine_events", "silver_events", "silver_labels", "features_offline", "features_online",
    "predictions", "features_stream", "quarantine_events_stream", "drift", "alerts",
    "model_events",
)
# per generator: the drift the live stream switches on (simulate.py scenarios) two hours of event time in
DRIFT_SCENARIOS = {
    "card_transactions": ("covariate_shift@2h:country=NG,share=0.3", "concept_drift@2h"),
    "delivery_orders": ("covariate_shift@2h:factor=1.5", "concept_drift@2h:factor=2"),
}
LIVE_RATE = 200.0      # live events per wall second: at the history's arrival rate, event time runs 360x real time
HISTORY_HOURS = 24     # 24 h of history: at the fraud rate (2,000/h, 1% fraud) ~70 frauds in the test split
LIVE_TIMEOUT_S = 480   # the live stream stops after this long even when the challenger has not settled
CATCH_UP_S = 120       # then the scoring query gets this long to score what was published
# On 2 cores each micro-batch costs seconds whatever its size, and the scoring query and the
# monitor's three queries ran back to back, leaving the retrain a fraction of a core: longer
# triggers give it the rest (scoring latency grows by a few seconds; the alert does not come later,
# as a monitor batch took 30-40 s anyway).
SCORING_TRIGGER = "15 seconds"
MONITOR_TRIGGER = "60 seconds"
# A retrain on the alert trains on this much event time before it (model.retrain_window): the drift
# starts 2 h of event time into the live stream and the alert comes a minute or more of wall time
# later (6 h of event time or more at the fraud demo's 360x), so the challenger learns the new
# pattern from rows after the drift instead of averaging it with the 24 h of history before it.
RETRAIN_WINDOW = "5h"


def demo_usecase(usecase: str, where: Path) -> tuple[Path, dict[str, Any]]:
    """The demo's copy of the use case (a name or a YAML path): its YAML with the settings a 10-minute run needs,
    written to ``where/<uc>.yaml``; returns its path and the settings changed.

    The shipped drift window (1 minute, 500 rows at least) suits a production stream; the
    simulator's history rate (``simulator.events_per_hour``) fills such a window only once
    every 15 minutes of event time, so the demo's window holds about 1,000 events. Delivery
    evaluates every 10 s instead of 30 s and needs a few hundred labels per stage. The
    hyper-parameter search keeps its method and validation but tries 2 candidates (a grid:
    the first two values of its first parameter, the first of the others; random: n = 2):
    a retrain runs beside four streaming queries on the same two cores; it trains on the last
    :data:`RETRAIN_WINDOW` of event time (``model.retrain_window``). The scoring query
    triggers every :data:`SCORING_TRIGGER` (the monitor every :data:`MONITOR_TRIGGER`).
    """
    import yaml

    uc = load_usecase(usecase)
    rate = float(uc.simulator.get("events_per_hour", 2000))
    window_min = max(1, math.ceil(2 * uc.drift.min_samples / rate * 60))
    changed: dict[str, Any] = {
        "drift": {"window": f"{window_min}m", "lateness": f"{max(1, window_min // 3)}m",
                  "alert": {"n": 2, "m": 3, "retrain": True}},
        "streaming": {"starting_offsets": "latest", "trigger": SCORING_TRIGGER},
        "delivery": {"interval": "10s", "min_labels": 300, "min_positives": 10},
    }
    search = uc.model.search if uc.model is not None else None
    if uc.model is not None:
        changed["model"] = {"retrain_window": RETRAIN_WINDOW}
    if search is None:
        pass
    elif search.method == "random" and search.n > 2:
        changed["model"]["search"] = {"n": 2}
    elif search.method == "grid" and search.params:
        grid = {k: (v[:2] if i == 0 else v[:1]) for i, (k, v) in enumerate(search.params.items())
                if isinstance(v, list)}
        if grid != search.params:
            changed["model"]["search"] = {"params": grid}
    data = yaml.safe_load(usecase_path(usecase).read_text())
    for section, values in changed.items():
        merged = dict(data.get(section) or {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                value = {**merged[key], **value}  # model.search: keep method, validation, metric
            merged[key] = value
        data[section] = merged
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{uc.name}.yaml"
    path.write_text(f"# written by driftline demo from {usecase_path(usecase)}; changed: "
                    + json.dumps(changed) + "\n" + yaml.safe_dump(data, sort_keys=False))
    load_usecase(path)  # the copy must load like the original
    return path, changed


@dataclass
class DemoProgress:
    """The live phase's display: one line per phase change, a status line every few seconds."""

    echo: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    seen: set[str] = field(default_factory=set)
    last_line: float = 0.0

    def event(self, key: str, text: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.echo(f"  [{self._clock()}] {text}")

    def _clock(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def status(self, status: dict[str, Any], drift: str, every_s: float = 10.0) -> None:
        if time.monotonic() - self.last_line < every_s:
            return
        self.last_line = time.monotonic()
        versions = f"champion v{status.get('champion')}"
        if status.get("challenger") is not None:
            versions += f", challenger v{status.get('challenger')} ({status.get('routing')})"
        phase = str(status.get("phase"))
        if status.get("retraining"):
            phase += " + retraining"
        self.echo(f"  [{self._clock()}] {phase} | produced {self.produced:,} | scored "
                  f"{status.get('scored_rows', 0):,} ({status.get('rows_per_s', 0.0):.0f}/s) | {drift} | "
                  f"{len(status.get('alerts') or [])} alerts | {versions}")


def _read_status(path: Path) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _latest_drift(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    frame = read_local(catalog.path(platform, "drift", uc), ["window_end", "feature", "drifted"])
    if frame is None or frame.empty:
        return "no drift window yet"
    last = frame["window_end"].max()
    drifted = sorted(set(frame[(frame["window_end"] == last) & frame["drifted"]]["feature"]))
    return f"window to {pd.Timestamp(last):%m-%d %H:%M}: " + (f"drifted {', '.join(drifted)}" if drifted
                                                               else "no drift")


def _narrate(progress: DemoProgress, status: dict[str, Any]) -> None:
    """One line per thing that happened in the loop, in order."""
    for alert in status.get("alerts") or []:
        reasons = alert.get("reasons") or []
        subjects = sorted({str(r.get("subject")) for r in reasons if isinstance(r, dict)})
        progress.event(f"alert:{alert.get('alert_id')}",
                       f"ALERT {alert.get('alert_id')} at window end {alert.get('window_end')}: "
                       f"{', '.join(subjects[:6]) or 'see monitoring/<uc>_alerts'}")
    started = status.get("retraining") or {}
    done = {r.get("alert_id") for r in status.get("retrains") or [] if r.get("action") == "retrained"}
    for alert_id in [started.get("alert_id"), *sorted(done)]:
        if alert_id:  # said once, when it starts (or, if missed between two reads, when it is done)
            progress.event(f"retrain-start:{alert_id}", f"retraining on alert {alert_id}: ingest → validate → "
                                                        "features → train → gate (a few minutes beside the queries)")
    for r in status.get("retrains") or []:
        progress.event(f"retrain:{r.get('alert_id')}", f"retrain on alert {r.get('alert_id')}: {r.get('action')}, "
                                                       f"{r.get('detail')}")
    for v in status.get("shadowed") or []:
        progress.event(f"shadow:{v}", f"challenger v{v} in shadow: scored on every event, never served")
    for d in status.get("decisions") or []:
        action = {"advance": "ramp"}.get(str(d.get("action")), str(d.get("action")))
        if action in ("ramp", "promote", "retire"):
            progress.event(f"decision:{action}:{d.get('stage')}:{d.get('share')}:{d.get('challenger_version')}",
                           f"{action.upper()} v{d.get('challenger_version')}: {d.get('reason')}")


def _start_loop(uc_path: Path, status_file: Path, log_file: Path, overrides: tuple[str, ...],
                timeout_s: float) -> subprocess.Popen[bytes]:
    cmd = [str(PROJECT_ROOT / "spark-submit.sh"), "streaming/loop.py", "--usecase", str(uc_path),
           "--timeout-s", str(timeout_s), "--status-file", str(status_file), "--monitor-trigger", MONITOR_TRIGGER,
           "--pause-monitor", "-v"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "DRIFTLINE_HOME": str(PROJECT_ROOT)}
    with log_file.open("wb") as out:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def python_children(pid: int) -> list[int]:
    """The Python processes among ``pid``'s children (Linux ``/proc``): under ``spark-submit`` the
    process started is the JVM, and the driver's Python is its child."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()  # "pid (comm) state ppid ..."
        except OSError:
            continue  # the process ended meanwhile
        comm, fields = text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 1:].split()
        if int(fields[1]) == pid and comm.startswith("python"):
            found.append(int(stat.parent.name))
    return found


def stop_loop(loop: subprocess.Popen[bytes], wait_s: float = 120.0) -> int:
    """Stop ``streaming/loop.py`` cleanly; its exit code. SIGTERM goes to the driver's Python
    process, which stops the queries after their running micro-batches and lets the retrain
    thread finish (``signal`` in the loop's docstring). Sent to the spark-submit process, the
    JVM, it would stop the SparkContext under the running queries (exit 143). The JVM itself
    gets SIGTERM only when no Python driver is found or it has not stopped after ``wait_s``."""
    if loop.poll() is None:
        drivers = python_children(loop.pid)
        for pid in drivers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if not drivers:
            loop.terminate()
        try:
            return loop.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            loop.terminate()
    return loop.wait()


def run_demo(
    platform: PlatformConfig,
    usecase: str = "fraud",
    events: int | None = None,
    seed: int = 7,
    overrides: tuple[str, ...] = (),
    keep_broker: bool = False,
    echo: Callable[[str], None] = print,
    live_timeout_s: float = LIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """The closed loop, live: history → batch pipeline → champion; then the scoring, monitor,
    retrain and delivery loop (``streaming/loop.py``) on a live stream in which a drift
    scenario switches on; ends with a summary read back from the Delta tables and the registry
    (returned), and the HTML report. See the README's "What the two commands do".
    """
    from driftline.html_report import build_report
    from driftline.produce import produce_usecase

    work = Path(platform.path(platform.lake_root)).parent / "demo"
    uc_path, changed = demo_usecase(usecase, work)
    uc = load_usecase(uc_path)
    sim = uc.simulator
    per_hour = float(sim.get("events_per_hour", 2000))
    history = events or int(HISTORY_HOURS * per_hour)
    start = pd.Timestamp(sim.get("start", "2024-01-01T00:00:00Z"))
    live_start = start + pd.Timedelta(hours=history / per_hour)
    speedup = LIVE_RATE / (per_hour / 3600.0)  # the live stream keeps the history's events per hour
    scenarios = DRIFT_SCENARIOS.get(str(sim.get("generator")), ())
    t_start = time.monotonic()
    echo(f"driftline demo: use case {uc.name} (demo settings {json.dumps(changed)}; copy at {uc_path})")
    with kafka_for_demo(platform, keep_broker, echo):
        earlier = _events_in_topic(platform, uc.topic("events"))
        if earlier:
            seed += earlier  # same seed, same event ids: a re-run would publish only duplicates
            echo(f"[kafka] {uc.topic('events')} already holds {earlier} events from earlier runs; new seed {seed}")
        t0 = time.monotonic()
        hist = produce_usecase(platform, uc, events=history, seed=seed, labels=True, flush_labels=True,
                               start=start.isoformat(), scenarios=["malformed:rate=0.01", "duplicates:rate=0.01"])
        echo(f"[1/5 history] {hist.acked:,} events ({history / per_hour:.0f} h of event time, 1% malformed, "
             f"1% duplicates) and {hist.labels_acked:,} labels published to {uc.topic('events')} / "
             f"{uc.topic('labels')} ({time.monotonic() - t0:.0f}s)")
        for job, extra, what in (("jobs/pipeline.py", ["--once", "--reason", "demo history"],
                                  "ingest → validate → features → train → gate: the champion"),):
            t0 = time.monotonic()
            submit(job, ["--usecase", str(uc_path), *extra], overrides)
            echo(f"[2/5 batch] ./spark-submit.sh {job} --usecase {uc.name} {' '.join(extra)}: {what} "
                 f"({time.monotonic() - t0:.0f}s)")
        echo("  " + _registry_summary(platform, uc.name))

        status_file, log_file = work / "loop-status.json", work / "loop.log"
        status_file.unlink(missing_ok=True)
        # the demo ends the live phase itself; the loop's own timeout only guards against a demo that died
        loop = _start_loop(uc_path, status_file, log_file, overrides, live_timeout_s + CATCH_UP_S + 120)
        echo(f"[3/5 live] ./spark-submit.sh streaming/loop.py --usecase {uc.name} "
             f"(scoring, monitor, retrain on alert, delivery; log {log_file})")
        progress = DemoProgress(echo)
        stop = threading.Event()
        produced: dict[str, Any] = {}

        def produce_live() -> None:
            def count(n: int, _failed: int) -> None:
                progress.produced += n

            produced["result"] = produce_usecase(
                platform, uc, rate=LIVE_RATE, speedup=speedup, events=10_000_000, seed=seed + 1,
                start=live_start.isoformat(), scenarios=list(scenarios), labels=True, progress=count, stop=stop)

        producer = threading.Thread(target=produce_live, name="demo-producer", daemon=True)
        code: int | None = None
        try:
            while loop.poll() is None and not _read_status(status_file).get("score_ready"):
                time.sleep(1)
            producer.start()
            progress.event("live", f"live stream on: {LIVE_RATE:.0f} events/s, event time {speedup:.0f}x real "
                                   f"time from {live_start:%Y-%m-%d %H:%M}")
            drift_at = live_start + pd.Timedelta(hours=2)
            drift_text, last_drift_read = "no drift window yet", 0.0
            status: dict[str, Any] = {}
            while loop.poll() is None and not status.get("settled") and (
                    time.monotonic() - progress.started < live_timeout_s):
                status = _read_status(status_file)
                if progress.produced >= 2 * per_hour:
                    progress.event("drift", f"drift scenario on from event time {drift_at:%m-%d %H:%M}: "
                                            f"{', '.join(scenarios)}")
                _narrate(progress, status)
                if time.monotonic() - last_drift_read > 10:
                    drift_text, last_drift_read = _latest_drift(platform, uc), time.monotonic()
                progress.status(status, drift_text)
                time.sleep(1)
            # the challenger settled, the live phase timed out or the loop stopped: stop the stream and
            # let scoring catch up (the loop keeps running meanwhile)
            stop.set()
            producer.join()
            acked = produced["result"].acked if "result" in produced else 0
            deadline = time.monotonic() + CATCH_UP_S
            while loop.poll() is None and time.monotonic() < deadline:
                status = _read_status(status_file)
                if int(status.get("scored_rows", 0)) >= acked:
                    break
                progress.status(status, drift_text, every_s=5)
                time.sleep(1)
            _narrate(progress, status)
        finally:
            stop.set()
            code = stop_loop(loop)
            if producer.is_alive():
                producer.join()
        status = _read_status(status_file)
        if code != 0:
            raise RuntimeError(f"streaming/loop.py exited with {code}; see {log_file}")
        live = produced.get("result")
        settled = status.get("settled") or {}
        echo(f"[4/5 live] {'challenger ' + str(settled.get('action')) + 'd' if settled else 'timed out'} after "
             f"{time.monotonic() - progress.started:.0f}s; {live.acked if live else 0:,} live events acknowledged, "
             f"{status.get('scored_rows', 0):,} read by the scoring query")
        summary = demo_summary(platform, uc, live_events=live.acked if live else 0, history_events=hist.acked)
        summary["settled"] = settled
        (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        echo_summary(summary, echo)
        report = build_report(platform, uc)
        echo(f"[5/5 report] {report}  (open it in a browser; it needs no network)")
        echo(f"demo finished in {time.monotonic() - t_start:.0f}s; MLflow UI: .venv/bin/mlflow ui "
             f"--backend-store-uri {platform.mlflow.resolved_tracking_uri(PROJECT_ROOT)}")
        return summary


def demo_summary(platform: PlatformConfig, uc: UseCaseConfig, *, live_events: int, history_events: int
                 ) -> dict[str, Any]:
    """What the demo did, read back from the Delta tables (delta-rs) and the MLflow registry."""
    from driftline.registry import CHALLENGER, CHAMPION, alias_version, client_for, model_name

    tables = {f"{t.layer}/{t.table_name(uc.name)}": _delta_rows(t.path(platform, uc))
              for t in (catalog.table(key) for key in DEMO_TABLES)}
    preds = read_local(catalog.path(platform, "predictions", uc), ["event_id", "served", "route", "model_version"])
    routes: dict[str, int] = {}
    served_ids = 0
    if preds is not None and not preds.empty:
        for (route, version), n in preds.groupby(["route", "model_version"]).size().items():
            routes[f"{route} v{version}"] = int(n)
        served_ids = int(preds[preds["served"]]["event_id"].nunique())
    audit = read_local(catalog.path(platform, "model_events", uc),
                       ["event_time", "action", "from_version", "to_version", "reason"])
    events = [] if audit is None else [
        {k: (None if pd.isna(v) else (int(v) if k.endswith("version") else str(v))) for k, v in row.items()}
        for row in audit.sort_values("event_time").to_dict("records")]
    alerts = read_local(catalog.path(platform, "alerts", uc), ["alert_id", "window_end"])
    client = client_for(platform)
    name = model_name(uc)
    return {
        "history_events": history_events, "live_events": live_events, "tables": tables,
        "predictions_by_route": routes, "served_event_ids": served_ids,
        "alerts": [] if alerts is None else sorted(str(a) for a in alerts["alert_id"]),
        "model_events": events,
        "champion": alias_version(client, name, CHAMPION), "challenger": alias_version(client, name, CHALLENGER),
    }


def echo_summary(summary: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo("Summary (read back from the Delta tables with delta-rs and from the MLflow registry):")
    echo(f"  events: {summary['history_events']:,} history + {summary['live_events']:,} live acknowledged; "
         f"{summary['served_event_ids']:,} distinct live events served a prediction")
    for route, n in sorted(summary["predictions_by_route"].items()):
        echo(f"  predictions {route:<16} {n:>8,}")
    echo(f"  alerts: {len(summary['alerts'])} ({', '.join(summary['alerts']) or 'none'})")
    echo("  model events:")
    for e in summary["model_events"]:
        echo(f"    {e['event_time'][:19]}  {e['action']:<18} v{e['from_version']} -> v{e['to_version']}  {e['reason']}")
    echo(f"  registry: champion v{summary['champion']}"
         + (f", challenger v{summary['challenger']}" if summary["challenger"] is not None else ""))
    echo("  Delta tables (rows):")
    for table, rows in summary["tables"].items():
        echo(f"    {table:<34} {rows:>8,}")


def _registry_summary(platform: PlatformConfig, usecase: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(platform.mlflow.resolved_tracking_uri(PROJECT_ROOT))
    client = MlflowClient()
    name = f"{usecase}-model"
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        return f"MLflow: no registered model {name}"
    aliases = ", ".join(f"{alias}=v{version}" for alias, version in sorted(model.aliases.items()))
    champion = model.aliases.get("champion")
    metrics = ""
    run_id = client.get_model_version(name, champion).run_id if champion else None
    if run_id:
        run = client.get_run(run_id)
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(run.data.metrics.items()) if k.startswith("test_"))
    return f"MLflow: {name} aliases [{aliases}] {metrics}".rstrip()
