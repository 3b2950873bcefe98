"""The closed loop in one long-running driver: online scoring, the stream monitor (which
raises alerts itself), retraining on each alert (the new challenger goes to shadow) and
progressive delivery (shadow → canary steps → champion, or retired on a guardrail).

    driftline run --usecase fraud                                   # until stopped (Ctrl-C)
    ./spark-submit.sh streaming/loop.py --usecase fraud             # the same, as a Spark job
    ./spark-submit.sh streaming/loop.py --usecase fraud --until settled --timeout-s 900

What runs, all in one Spark application:

  score      streaming/score's query (``streaming.trigger``): predictions/<uc>, <uc>.predictions
  monitor    streaming/monitor's three queries (``--monitor-trigger``), started once the
             predictions table exists; they evaluate the alert rule as windows close and
             publish each alert once to <uc>.alerts. With ``--pause-monitor`` they stop while a
             retrain runs and resume from their checkpoints after it (no window is lost)
  retrain    a thread consuming <uc>.alerts (jobs/pipeline.py --on-alert): ingest → validate
             → features → train → gate; a challenger that passes goes to shadow. Its Spark
             jobs run in the FAIR pool "retrain", which takes free task slots first
  delivery   every ``delivery.interval``, while a challenger is in shadow or canary, one step of
             :func:`driftline.delivery.step` (hold, ramp, promote or retire, audited with evidence)

After a promotion or a rollback the monitor restarts on its checkpoints with the new champion's
reference profile. ``--status-file`` gets a JSON snapshot every few seconds (batches, rows,
routing, versions, alerts, the last delivery decision) for a progress display; ``driftline
demo`` reads it. ``--until settled`` stops once a challenger that entered shadow during this
run has been promoted or retired; ``--timeout-s`` stops after that many seconds.

SIGTERM or SIGINT to this Python process stops cleanly: the running micro-batches finish, the
retrain thread finishes the alert it is handling (its offset is committed only then), and the
queries stop; the checkpoints resume where they stopped. Under ``./spark-submit.sh`` the process
started is the JVM, this process its child (``pkill -TERM -P <pid> python``); a SIGTERM to the
JVM stops the SparkContext under the queries (exit 143; the checkpoints replay the batch).

Exit codes: 0 stopped cleanly (or settled), 1 a query or the retrain thread failed, 2 bad
arguments or configuration, 4 ``--timeout-s`` passed before ``--until`` was met.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from driftline.config import PlatformConfig, UseCaseConfig, trigger_options
from driftline.jobs import EXIT_FAILED, EXIT_OK, JobContext, entry_point
from driftline.preflight import needs

log = logging.getLogger("driftline.loop")

EXIT_TIMEOUT = 4
SETTLED = ("promote", "retire")
RATE_WINDOW_S = 30.0


@dataclass
class LoopStatus:
    """What the loop has done so far; written as JSON to ``--status-file``."""

    usecase: str
    started_at: float
    phase: str = "starting"
    score_ready: bool = False  # the scoring query has made its first trigger (its start offsets are fixed)
    scored_batches: int = 0
    scored_rows: int = 0
    rows_per_s: float = 0.0
    champion: int | None = None
    challenger: int | None = None
    routing: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    retraining: dict[str, Any] | None = None  # the alert being retrained on now (alert_id, at)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    shadowed: list[int] = field(default_factory=list)  # versions that entered shadow during this run
    settled: dict[str, Any] | None = None
    error: str | None = None
    updated_at: float = 0.0

    def write(self, path: Path | None) -> None:
        self.updated_at = time.time()
        if path is None:
            return
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), default=str, indent=1))
        tmp.replace(path)  # readers never see half a file


class Loop:
    """The running parts of the closed loop (see the module docstring)."""

    def __init__(self, spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *,
                 monitor_trigger: str = "10 seconds", status_file: Path | None = None,
                 pause_monitor: bool = False) -> None:
        self.spark, self.platform, self.uc = spark, platform, uc
        self.monitor_trigger = monitor_trigger
        self.pause_monitor = pause_monitor  # stop the monitor queries while a retrain runs
        self.status_file = status_file
        self.status = LoopStatus(uc.name, time.time())
        self.stop = threading.Event()
        self.score: StreamingQuery | None = None
        self.monitor: Any = None  # MonitorQueries
        self.retrainer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._monitored_champion: int | None = None
        self._rows_seen: deque[tuple[float, int]] = deque()  # (time, rows read) over the last RATE_WINDOW_S
        self._last_batch_id, self._rows_read = -1, 0

    # ------------------------------------------------------------------ parts

    def _on_batch(self, batch_id: int) -> None:
        with self._lock:
            self.status.scored_batches += 1

    def start_scoring(self) -> None:
        from driftline.scoring import start_scoring

        self.score = start_scoring(self.spark, self.platform, self.uc, on_batch=self._on_batch)
        log.info("loop %s: scoring query %s running", self.uc.name, self.score.id)

    def monitor_paused(self) -> bool:
        """With ``pause_monitor``: a retrain is running, so the monitor queries stay stopped."""
        return self.pause_monitor and self.status.retraining is not None

    def start_monitor(self) -> bool:
        """Start the monitor queries once the predictions table exists; False while it does not."""
        from driftline import catalog
        from driftline.delta import is_delta_table
        from driftline.monitoring import load_reference_profile, start_monitor

        if not is_delta_table(self.spark, catalog.path(self.platform, "predictions", self.uc)):
            return False
        profile = load_reference_profile(self.platform, self.uc)
        self.monitor = start_monitor(self.spark, self.platform, self.uc, profile, spec=self.uc.drift,
                                     trigger=self.monitor_trigger)
        self._monitored_champion = self.status.champion
        log.info("loop %s: monitor running (%d queries, reference: champion v%s)", self.uc.name,
                 len(self.monitor), self.status.champion)
        return True

    def stop_monitor(self) -> None:
        if self.monitor is None:
            return
        for q in self.monitor:
            if q.isActive:
                q.stop()
        self.monitor = None

    def start_retrainer(self) -> None:
        from driftline.pipelines.retrain import run_on_alert
        from driftline.session import RETRAIN_POOL

        def consume() -> None:
            # the retrain's Spark jobs take free task slots before the streaming queries' (FAIR pools,
            # conf/spark/fairscheduler.xml); the property is per thread, the queries keep "default"
            self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", RETRAIN_POOL)
            try:
                run_on_alert(self.spark, self.platform, self.uc, stop=self.stop, on_handled=self._on_alert,
                             on_start=self._on_retrain)
            except Exception as e:  # noqa: BLE001 - reported by the main loop, which stops
                log.exception("loop %s: the retrain thread failed", self.uc.name)
                self.status.error = f"retrain: {e}"
                self.stop.set()

        self.retrainer = threading.Thread(target=consume, name=f"retrain-{self.uc.name}", daemon=True)
        self.retrainer.start()

    def _on_retrain(self, alert: Any) -> None:
        with self._lock:
            self.status.retraining = {"alert_id": alert.alert_id, "at": time.time()}

    def _on_alert(self, handled: Any) -> None:
        with self._lock:
            if self.status.retraining and self.status.retraining.get("alert_id") == handled.alert_id:
                self.status.retraining = None
            self.status.retrains.append({"alert_id": handled.alert_id, "action": handled.action,
                                         "detail": handled.detail, "at": time.time()})

    # ------------------------------------------------------------------ each tick

    def refresh(self) -> None:
        """Versions, routing, alerts and throughput into the status."""
        from driftline.alerts import list_alerts, monitoring_path
        from driftline.registry import CHALLENGER, CHAMPION, alias_version, client_for, model_name
        from driftline.scoring import current_routing, routing_spec

        client = client_for(self.platform)
        name = model_name(self.uc)
        try:
            tags = client.get_registered_model(name).tags
        except Exception:  # noqa: BLE001 - no model registered yet
            tags = {}
        routing = current_routing(tags, routing_spec(self.uc))
        champion, challenger = alias_version(client, name, CHAMPION), alias_version(client, name, CHALLENGER)
        if challenger == champion:
            challenger = None  # the first model is both until a newer one is registered
        alerts = list_alerts(monitoring_path(self.platform, self.uc, "alerts"))
        rows = self._progress_rows()
        now = time.monotonic()
        with self._lock:
            s = self.status
            s.champion, s.challenger = champion, challenger
            s.routing = routing.mode if routing.mode != "canary" else f"canary {routing.share:.0%}"
            s.alerts = [{k: a.get(k) for k in ("alert_id", "window_end", "reasons")} for a in alerts]
            s.score_ready = s.score_ready or (self.score is not None and self.score.lastProgress is not None)
            if rows is not None:
                # rows/s over the last RATE_WINDOW_S: micro-batches arrive every few seconds, a
                # rate between two ticks would mostly read 0
                self._rows_seen.append((now, rows))
                while len(self._rows_seen) > 1 and now - self._rows_seen[0][0] > RATE_WINDOW_S:
                    self._rows_seen.popleft()
                t0, r0 = self._rows_seen[0]
                s.rows_per_s = (rows - r0) / (now - t0) if now > t0 else 0.0
                s.scored_rows = rows

    def _progress_rows(self) -> int | None:
        """Events the scoring query has read so far, from its progress reports (each batch once)."""
        if self.score is None:
            return None
        for p in self.score.recentProgress:
            batch_id = int(p.get("batchId", -1))
            if batch_id > self._last_batch_id:
                self._last_batch_id = batch_id
                self._rows_read += int(p.get("numInputRows", 0) or 0)
        return self._rows_read

    def deliver(self) -> dict[str, Any] | None:
        """One delivery step while a challenger is in shadow or canary."""
        from driftline.delivery import step

        if self.status.challenger is None or self.status.routing in ("", "champion"):
            return None
        decision = step(self.spark, self.platform, self.uc)
        row = decision.as_dict()
        row["at"] = time.time()
        with self._lock:
            self.status.decisions.append(row)
            del self.status.decisions[:-50]
        log.info("loop %s: delivery: %s", self.uc.name, row.get("reason") or row)
        return row

    def check_queries(self) -> None:
        for q in [self.score, *(self.monitor or ())]:
            if q is not None and not q.isActive and q.exception() is not None:
                raise RuntimeError(f"query {q.name} failed: {q.exception()}")


def run_loop(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, until: str | None = None,
    timeout_s: float | None = None, monitor_trigger: str = "10 seconds", status_file: Path | None = None,
    tick_s: float = 2.0, stop: threading.Event | None = None, pause_monitor: bool = False,
) -> LoopStatus:
    """Run the closed loop until ``stop`` is set, ``until='settled'`` is met or ``timeout_s`` passes.

    Example::

        status = run_loop(spark, platform, load_usecase("fraud"), until="settled", timeout_s=900)
        status.settled   # {'action': 'promote', 'version': 2, 'reason': '...'}
    """
    loop = Loop(spark, platform, uc, monitor_trigger=monitor_trigger, status_file=status_file,
                pause_monitor=pause_monitor)
    if stop is not None:
        loop.stop = stop
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    interval = uc.delivery.interval_s
    next_delivery = time.monotonic() + interval
    loop.refresh()
    loop.start_scoring()
    loop.start_retrainer()
    loop.status.phase = "scoring"
    shadow_seen: set[int] = set()
    try:
        while not loop.stop.is_set():
            loop.check_queries()
            loop.refresh()
            s = loop.status
            if loop.monitor is not None and loop.monitor_paused():
                log.info("loop %s: a retrain started; the monitor pauses until it ends (--pause-monitor)", uc.name)
                loop.stop_monitor()
                s.phase = "scoring; monitor paused while retraining"
            elif loop.monitor is None and not loop.monitor_paused() and loop.start_monitor():
                s.phase = "scoring + monitoring"
            elif loop.monitor is not None and s.champion != loop._monitored_champion:
                log.info("loop %s: champion is now v%s; restarting the monitor on its profile", uc.name,
                         s.champion)
                loop.stop_monitor()
                loop.start_monitor()
            if s.challenger is not None and s.routing not in ("", "champion") and s.challenger not in shadow_seen:
                shadow_seen.add(s.challenger)
                s.shadowed.append(s.challenger)
                s.phase = f"challenger v{s.challenger}: {s.routing}"
            if time.monotonic() >= next_delivery:
                next_delivery = time.monotonic() + interval
                row = loop.deliver()
                if row is not None and row.get("action") in SETTLED and row.get("challenger_version") in shadow_seen:
                    s.settled = row
                    s.phase = f"challenger v{row.get('challenger_version')}: {row.get('action')}"
                elif row is not None:
                    s.phase = f"challenger v{s.challenger}: {s.routing}"
            loop.status.write(status_file)
            if until == "settled" and s.settled is not None:
                log.info("loop %s: settled: %s", uc.name, s.settled)
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("loop %s: %.0f s passed before %s", uc.name, timeout_s, until or "a stop")
                s.phase = "timed out"
                break
            loop.stop.wait(tick_s)
    except Exception as e:
        loop.status.error = str(e)
        raise
    finally:
        loop.stop.set()
        for q in [loop.score, *(loop.monitor or ())]:
            if q is not None and q.isActive:
                q.stop()
        if loop.retrainer is not None:
            loop.retrainer.join(timeout=600)
        loop.status.phase = "stopped" if loop.status.phase != "timed out" else loop.status.phase
        loop.status.write(status_file)
    return loop.status


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--until", choices=["settled"],
                        help="stop once a challenger that entered shadow during this run is promoted or retired")
    parser.add_argument("--timeout-s", type=float, help="stop after this many seconds (exit 4 with --until)")
    parser.add_argument("--monitor-trigger", default="10 seconds",
                        help="trigger of the monitor queries ['10 seconds']")
    parser.add_argument("--status-file", type=Path, help="write a JSON status snapshot here every few seconds")
    parser.add_argument("--pause-monitor", action="store_true",
                        help="stop the monitor queries while a retrain runs and resume them from their checkpoints "
                             "after it (for a small machine: the retrain gets the cores; no window is lost)")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timeout_s is not None and args.timeout_s <= 0:
        parser.error("--timeout-s: expected seconds > 0")
    try:
        trigger_options(args.monitor_trigger)
    except ValueError as e:
        parser.error(f"--monitor-trigger: {e}")
    if args.monitor_trigger in ("availableNow", "once"):
        parser.error("--monitor-trigger: the loop runs until stopped; give an interval such as '10 seconds'")


def _run(ctx: JobContext) -> int:
    from driftline.query_metrics import attach_query_metrics

    a = ctx.args
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the loop", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    metrics = attach_query_metrics(ctx.spark, ctx.platform)
    try:
        status = run_loop(ctx.spark, ctx.platform, ctx.uc, until=a.until, timeout_s=a.timeout_s,
                          monitor_trigger=a.monitor_trigger, status_file=a.status_file, stop=stop,
                          pause_monitor=a.pause_monitor)
    finally:
        metrics.close()
    if status.error:
        print(f"loop: {ctx.uc.name}: failed: {status.error}")
        return EXIT_FAILED
    if a.until and status.settled is None and not stop.is_set():
        print(f"loop: {ctx.uc.name}: --timeout-s passed before the challenger settled")
        return EXIT_TIMEOUT
    print(f"loop: {ctx.uc.name}: stopped ({status.phase})")
    return EXIT_OK


main = entry_point("loop", __doc__, run=_run, arguments=_arguments, check=_check,
                   preflight=needs(kafka=True, mlflow=True))
