"""Software metrics of every streaming query, from a StreamingQueryListener, into
the Delta table ``monitoring/queries``.

One row per micro-batch (:data:`QUERY_METRICS_SCHEMA`): query name, id and run
id, batch id, trigger time, input rows, input and processed rows per second,
batch duration (``durationMs.triggerExecution``), rows held in state and rows
dropped by the watermark (summed over the stateful operators; null for a
stateless query), the newest event time, the watermark and the event-to-output
latency. The latency is measured for the newest event of the batch
(trigger time + trigger duration - ``eventTime.max``), so it is a lower bound:
older events of the same batch waited longer. It is null when the query has no
event-time watermark (Spark reports ``eventTime`` only then).

Spark calls a Python listener from its listener-bus thread through the py4j
callback server, after the fact: a slow callback delays every other listener,
and one still running when the Python process exits fails in the JVM
(``Listener PythonStreamingQueryListenerWrapper threw an exception ...
Py4JException``). So a callback runs no Spark work: it turns the progress into a
row and appends it to a buffer. A background thread writes the buffer (adding
each batch's Spark job and stage counts from the status store) every
``flush_interval_s`` seconds and soon after a query terminates;
:meth:`QueryMetricsListener.close` (also registered with ``atexit``) first waits
for the termination event of every run that has stopped, which Spark posts after
the run's last progress, then removes the listener, waits for callbacks under
way and writes the rest. Callbacks never raise into Spark: errors are logged.
Each flush is one Delta append
carrying ``txnAppId``/``txnVersion`` (the listener's id and a flush counter), so
a retried flush is not written twice; a failed flush keeps its rows for the
next one (the buffer is bounded: the oldest rows are dropped first, counted in
:attr:`QueryMetricsListener.dropped`). Rows are unique per (query id, run id,
batch id); :func:`latest_per_query` reads them back.

    listener = attach_query_metrics(spark, platform)   # once per session; later calls return it
    query = df.writeStream.queryName("score").start(...)
    ...
    query.awaitTermination()
    listener.close()                                   # the last batch included, then detach
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from driftline import catalog
from driftline.catalog import QUERY_METRICS_COLUMNS, QUERY_METRICS_SCHEMA
from driftline.config import PlatformConfig
from driftline.delta import rows_local, write_delta
from driftline.errors import UsageError

log = logging.getLogger(__name__)

KEY_COLUMNS = ("query_id", "run_id", "batch_id")


def metrics_path(platform: PlatformConfig) -> str:
    """``<lake>/monitoring/queries``."""
    return catalog.path(platform, "queries")


def parse_spark_time(text: str | None) -> datetime | None:
    """A Spark progress timestamp (``2024-01-01T00:00:00.000Z``) as an aware UTC datetime.

        >>> parse_spark_time("2024-01-01T00:00:01.500Z")
        datetime.datetime(2024, 1, 1, 0, 0, 1, 500000, tzinfo=datetime.timezone.utc)
    """
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if value is None:
        return None
    try:
        out = kind(value)
    except (TypeError, ValueError):
        return None
    return None if isinstance(out, float) and out != out else out  # NaN -> null


def job_counts(spark: SparkSession, query_ids: Collection[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(Spark jobs, stages) of each micro-batch of the queries ``query_ids``, by (query id, batch
    id), from one pass over the driver's status store (kept for the last ``spark.ui.retainedJobs``
    jobs; works with the UI off). The fixed cost of a micro-batch grows with its job count.

    Example::

        job_counts(spark, [str(query.id)])  # {('5f0c...', 0): (5, 7), ('5f0c...', 1): (4, 6), ...}
    """
    wanted = {str(q) for q in query_ids}
    if not wanted:
        return {}
    jvm_sc = spark.sparkContext._jsc.sc()  # type: ignore[union-attr]
    jobs = jvm_sc.statusStore().jobsList(None)
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for i in range(jobs.size()):
        job = jobs.apply(i)
        description = job.description()
        text = str(description.get()) if description.isDefined() else ""
        query = _QUERY.search(text)
        batch = _BATCH.search(text)
        if query is None or batch is None or query.group(1) not in wanted:
            continue
        key = (query.group(1), int(batch.group(1)))
        n_jobs, n_stages = found.get(key, (0, 0))
        found[key] = (n_jobs + 1, n_stages + int(job.stageIds().size()))
    return found


def batch_jobs(spark: SparkSession, query_id: str) -> dict[int, tuple[int, int]]:
    """(Spark jobs, stages) each micro-batch of query ``query_id`` ran (see :func:`job_counts`).

    Example::

        batch_jobs(spark, str(query.id))  # {0: (5, 7), 1: (4, 6), ...}
    """
    return {batch: counts for (_, batch), counts in job_counts(spark, [query_id]).items()}


_QUERY = re.compile(r"(?<![A-Za-z])id = ([0-9a-fA-F-]{36})")
_BATCH = re.compile(r"batch = (\d+)")


def progress_row(progress: Any, app_name: str | None = None, now: datetime | None = None,
                 jobs: tuple[int, int] | None = None) -> dict[str, Any]:
    """One :data:`QUERY_METRICS_SCHEMA` row (a dict) from a ``StreamingQueryProgress``
    (or anything with its attributes, e.g. a test double)."""
    started = parse_spark_time(progress.timestamp)
    if started is None:
        raise UsageError("progress.timestamp: expected an ISO 8601 time, got nothing")
    durations = dict(progress.durationMs or {})
    duration = _number(durations.get("triggerExecution", progress.batchDuration), int)
    event_time = dict(progress.eventTime or {})
    newest = parse_spark_time(event_time.get("max"))
    latency = None
    if newest is not None:
        finished = started + timedelta(milliseconds=duration or 0)
        latency = int((finished - newest) / timedelta(milliseconds=1))
    operators = list(progress.stateOperators or [])
    state = sum(int(op.numRowsTotal) for op in operators) if operators else None
    dropped = sum(int(op.numRowsDroppedByWatermark) for op in operators) if operators else None
    return {
        "query_name": progress.name,
        "query_id": str(progress.id),
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "timestamp": started,
        "num_input_rows": _number(progress.numInputRows, int),
        "input_rows_per_second": _number(progress.inputRowsPerSecond, float),
        "processed_rows_per_second": _number(progress.processedRowsPerSecond, float),
        "batch_duration_ms": duration,
        "state_rows_total": state,
        "rows_dropped_by_watermark": dropped,
        "event_time_max": newest,
        "watermark": parse_spark_time(event_time.get("watermark")),
        "event_to_output_latency_ms": latency,
        "spark_jobs": None if jobs is None else jobs[0],
        "spark_stages": None if jobs is None else jobs[1],
        "app_name": app_name,
        "recorded_at": now or datetime.now(UTC),
    }


class QueryMetricsListener(StreamingQueryListener):
    """Buffers one row per query progress and appends the buffer to ``path`` in the background.

    Use :func:`attach_query_metrics` rather than building one directly.
    """

    def __init__(
        self, spark: SparkSession, path: str, *, flush_interval_s: float = 10.0, max_buffer: int = 10_000
    ) -> None:
        if flush_interval_s <= 0:
            raise UsageError(f"flush_interval_s: expected seconds > 0, got {flush_interval_s!r}")
        if max_buffer < 1:
            raise UsageError(f"max_buffer: expected at least 1 row, got {max_buffer!r}")
        self._session = spark
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.dropped = 0
        self._app_name = spark.sparkContext.appName
        self._txn_app = f"driftline-query-metrics-{uuid.uuid4().hex}"
        self._txn_version = 0
        self._rows: list[dict[str, Any]] = []
        self._seen: dict[tuple[str, str], int] = {}
        self._running: set[str] = set()  # runs whose start this listener saw and whose end it has not
        self._in_callback = 0
        self._detached = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="driftline-query-metrics", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ Spark's callbacks: quick, no Spark work, never raise

    def _callback(self, handle: Callable[[], None]) -> None:
        with self._changed:
            if self._detached:
                return
            self._in_callback += 1
        try:
            handle()
        except Exception:  # noqa: BLE001 - a listener must not fail Spark's listener bus
            log.exception("query metrics: could not record a listener event")
        finally:
            with self._changed:
                self._in_callback -= 1
                self._changed.notify_all()

    def onQueryStarted(self, event: Any) -> None:
        def started() -> None:
            with self._changed:
                self._running.add(str(event.runId))

        self._callback(started)

    def onQueryProgress(self, event: Any) -> None:
        self._callback(lambda: self._record(event.progress))

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        def terminated() -> None:
            with self._changed:
                self._running.discard(str(event.runId))
                self._changed.notify_all()
            self._wake.set()  # write soon, from the background thread

        self._callback(terminated)

    def _record(self, progress: Any) -> None:
        row = progress_row(progress, self._app_name)  # plain Python: the job counts are added when written
        with self._changed:
            self._rows.append(row)
            if len(self._rows) > self.max_buffer:
                overflow = len(self._rows) - self.max_buffer
                del self._rows[:overflow]
                self.dropped += overflow
            key = (row["query_id"], row["run_id"])
            self._seen[key] = max(self._seen.get(key, -1), row["batch_id"])
            self._changed.notify_all()

    # ------------------------------------------------------------------ buffer

    def pending(self) -> int:
        """Rows buffered but not written yet."""
        with self._lock:
            return len(self._rows)

    def wait_for_batch(self, query_id: str | uuid.UUID, batch_id: int, timeout_s: float = 30.0) -> bool:
        """Wait until the progress of ``batch_id`` (of any run of the query) has reached the
        listener; Spark delivers listener events asynchronously. True when it has.

            query.processAllAvailable()
            listener.wait_for_batch(query.id, query.lastProgress.batchId)
        """
        qid = str(query_id)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                if any(b >= batch_id for (q, _), b in self._seen.items() if q == qid):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def flush(self) -> int:
        """Append the buffered rows to the Delta table now; return how many were written.

        Called from the background thread and :meth:`close`, never from a listener callback:
        it runs Spark jobs. The rows get their Spark job and stage counts here, from the
        status store. On failure the rows go back to the buffer and the error propagates."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                self._add_job_counts(rows)
                df = self._session.createDataFrame([tuple(r[c] for c in QUERY_METRICS_COLUMNS) for r in rows],
                                                   QUERY_METRICS_SCHEMA)
                write_delta(df, self.path, mode="append", txn=(self._txn_app, self._txn_version), merge_schema=True)
            except BaseException:
                with self._lock:
                    self._rows[:0] = rows
                raise
            self._txn_version += 1
            log.debug("query metrics: %d rows -> %s", len(rows), self.path)
            return len(rows)

    def _add_job_counts(self, rows: list[dict[str, Any]]) -> None:
        missing = {r["query_id"] for r in rows if r["spark_jobs"] is None}
        try:
            counts = job_counts(self._session, missing)
        except Exception as e:  # noqa: BLE001 - the status store is a diagnostic: never lose the rows for it
            log.debug("query metrics: no job counts: %s", e)
            return
        for r in rows:
            found = counts.get((r["query_id"], r["batch_id"]))
            if r["spark_jobs"] is None and found is not None:
                r["spark_jobs"], r["spark_stages"] = found

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._closed.is_set():
                return
            if self._session.sparkContext._jsc is None:  # the session was stopped under us
                return
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - retried at the next interval
                log.warning("query metrics: writing %s failed, will retry: %s", self.path, e)

    def close(self, timeout_s: float = 60.0) -> None:
        """Write the progress of every batch, the last ones included, and detach the listener.

        Spark hands listener events over asynchronously: when ``awaitTermination()`` returns,
        the query's last progress events may still be queued, and a callback Python is still
        running when the process exits makes Spark log ``Listener
        PythonStreamingQueryListenerWrapper threw an exception``. So, within ``timeout_s``:
        wait for the termination event of every run this listener saw start that is no longer
        active (Spark posts it after the run's last progress), stop the background writer,
        remove the listener, wait for callbacks already under way, and write the buffer from
        the calling thread. A query still running when this is called is not waited for.
        """
        if self._closed.is_set():
            return
        deadline = time.monotonic() + timeout_s
        live = self._session.sparkContext._jsc is not None
        if live:
            self._await_terminations(deadline)
        self._closed.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        _ATTACHED.pop((id(self._session), self.path), None)
        if not live:
            with self._changed:
                self._detached = True
            if self.pending():
                log.warning("query metrics: session stopped, %d rows not written", self.pending())
            return
        with self._changed:
            self._detached = True  # a callback arriving from now on returns at once
        try:
            self._session.streams.removeListener(self)
        except Exception as e:  # noqa: BLE001
            log.warning("query metrics: removing the listener failed: %s", e)
        with self._changed:
            if not self._changed.wait_for(lambda: self._in_callback == 0, max(0.0, deadline - time.monotonic())):
                log.warning("query metrics: a listener callback was still running after %ss", timeout_s)
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001
            log.warning("query metrics: final write to %s failed; %d rows lost: %s", self.path, self.pending(), e)

    def _await_terminations(self, deadline: float) -> None:
        try:
            active = {str(q.runId) for q in self._session.streams.active}
        except Exception as e:  # noqa: BLE001 - then wait for no one
            log.debug("query metrics: cannot list the active queries: %s", e)
            return
        with self._changed:
            ended = self._running - active
            done = self._changed.wait_for(lambda: not (self._running & ended),
                                          max(0.0, deadline - time.monotonic()))
            if not done:
                log.warning("query metrics: no termination event from runs %s in time; their last batches "
                            "may be missing from %s", sorted(self._running & ended), self.path)


_ATTACHED: dict[tuple[int, str], QueryMetricsListener] = {}
_ATTACH_LOCK = threading.Lock()


def attach_query_metrics(
    spark: SparkSession, platform: PlatformConfig, *, flush_interval_s: float = 10.0
) -> QueryMetricsListener:
    """Record the progress of every streaming query of ``spark`` into ``monitoring/queries``.

    Idempotent per session and table: a second call returns the listener already attached.

    Example::

        listener = attach_query_metrics(spark, platform)
        query = stream.writeStream.queryName("score").start()
    """
    if not isinstance(spark, SparkSession):
        raise TypeError(f"spark: expected SparkSession, got {type(spark).__name__}")
    path = metrics_path(platform)
    with _ATTACH_LOCK:
        existing = _ATTACHED.get((id(spark), path))
        if existing is not None and not existing._closed.is_set():
            return existing
        listener = QueryMetricsListener(spark, path, flush_interval_s=flush_interval_s)
        spark.streams.addListener(listener)
        _ATTACHED[(id(spark), path)] = listener
        atexit.register(listener.close)
        log.info("query metrics: recording streaming progress into %s", listener.path)
        return listener


# --------------------------------------------------------------------------- reading back


def latest_per_query(path: str) -> list[dict[str, Any]]:
    """The newest row of each query (by query id) in the metrics table at ``path``, read
    with delta-rs (no Spark needed); newest first. Empty when there is no table yet.

    Example::

        latest_per_query(metrics_path(platform))[0]["processed_rows_per_second"]
    """
    rows = rows_local(path)
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["query_id"])
        if seen is None or (row["timestamp"], row["batch_id"]) > (seen["timestamp"], seen["batch_id"]):
            latest[row["query_id"]] = row
    return sorted(latest.values(), key=lambda r: r["timestamp"], reverse=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell.

        >>> print(format_table(["query", "rows"], [["score", 1200]]))
        query  rows
        score  1,200
    """
    body = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
    return "\n".join(lines)


QUERY_TABLE = (
    ("query", "query_name"), ("batch", "batch_id"), ("time (UTC)", "timestamp"), ("input rows", "num_input_rows"),
    ("input/s", "input_rows_per_second"), ("processed/s", "processed_rows_per_second"),
    ("batch ms", "batch_duration_ms"), ("jobs", "spark_jobs"), ("latency ms", "event_to_output_latency_ms"),
    ("state rows", "state_rows_total"), ("dropped", "rows_dropped_by_watermark"),
)


def format_queries(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`latest_per_query` output as a table; a query without a name shows its id."""
    body = [[r.get(col) if col != "query_name" else (r.get("query_name") or r["query_id"]) for _, col in QUERY_TABLE]
            for r in rows]
    return format_table([h for h, _ in QUERY_TABLE], body)
