"""Publish a simulated stream to Kafka at a target rate, labels following in simulated time.

    gen = make_generator(uc, seed=7, events_per_second=5000, diurnal=False,
                         scenarios=["covariate_shift@30s:factor=3"])
    result = produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                            events_topic="fraud.events", labels_topic="fraud.labels",
                            rate=5000, max_events=300_000)
    result.acked, result.failed, result.rate

or, with topics created and the generator built from the use case's config::

    produce_usecase(platform, load_usecase("fraud"), rate=5000, duration_s=60)

Events are keyed by the use case's entity key; labels by the event id. A label is
published once the simulated clock (the arrival time of the latest event sent)
has passed its ``label_time`` (event time + ``label.delay_s``). Labels still
pending when the run ends are dropped unless ``flush_labels`` is set: they have
not "happened" yet, and publishing them would give consumers labels from the
future. :class:`ProduceResult` counts them as ``labels_pending``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from driftline.config import PlatformConfig, UseCaseConfig
from driftline.errors import UsageError
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.simulate import Chunk, EventGenerator, Scenario, make_generator

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called after each batch with (events just sent, delivery errors so far)."""


@dataclass(frozen=True)
class ProduceResult:
    """What a run published and what the broker acknowledged.

    ``acked`` and ``labels_acked`` are exact when ``in_flight`` is 0 (every
    message was acknowledged or failed before the flush timeout); otherwise the
    messages still in flight are subtracted from ``acked`` first.
    """

    sent: int
    acked: int
    failed: int
    labels_sent: int
    labels_acked: int
    labels_failed: int
    labels_pending: int
    in_flight: int
    elapsed_s: float
    simulated_s: float
    errors: dict[str, int] = field(default_factory=dict)
    ground_truth: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events sent per wall-clock second."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.labels_failed == 0 and self.in_flight == 0 and self.acked == self.sent

    def summary(self) -> str:
        """One line for humans."""
        text = (
            f"{self.sent} events sent in {self.elapsed_s:.1f}s ({self.rate:,.0f}/s): {self.acked} acknowledged, "
            f"{self.failed} failed; {self.labels_sent} labels sent ({self.labels_acked} acknowledged, "
            f"{self.labels_failed} failed, {self.labels_pending} not yet due)"
        )
        if self.in_flight:
            text += f"; {self.in_flight} still unacknowledged at the flush timeout"
        if self.errors:
            text += "; errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items()))
        return text


class _LabelQueue:
    """Labels waiting for the simulated clock: per chunk, arrays sorted by release time.

    Only the emission index, the label value and the label time are kept (24 bytes
    a label); payloads are encoded when labels are released, so a long delay at a
    high rate does not hold millions of encoded messages.
    """

    def __init__(self) -> None:
        # (release times, indexes, values, label times, [cursor]) per chunk
        self._segments: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]] = []

    def add(self, release_s: np.ndarray, index: np.ndarray, values: np.ndarray, label_time: np.ndarray) -> None:
        if len(release_s) == 0:
            return
        order = np.argsort(release_s, kind="stable")
        self._segments.append((release_s[order], index[order], values[order], label_time[order], [0]))

    def due(self, clock_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(indexes, values, label times) released at or before ``clock_s``, removed from the queue.

        A label's release time is never before its event's arrival, so every label
        due at the arrival time of the last event sent belongs to an event sent.
        """
        parts = []
        for release, index, values, label_time, cursor in self._segments:
            stop = int(np.searchsorted(release, clock_s, side="right"))
            if stop > cursor[0]:
                parts.append((index[cursor[0]:stop], values[cursor[0]:stop], label_time[cursor[0]:stop]))
                cursor[0] = stop
        self._segments = [s for s in self._segments if s[4][0] < len(s[0])]
        return _concat(parts)

    def remaining(self, below_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The labels still queued whose event was sent (emission index < ``below_index``)."""
        parts = []
        for _release, index, values, label_time, cursor in self._segments:
            keep = np.flatnonzero(index[cursor[0]:] < below_index) + cursor[0]
            parts.append((index[keep], values[keep], label_time[keep]))
        return _concat(parts)


def _concat(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return None
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def produce_stream(
    producer: Producer,
    gen: EventGenerator,
    *,
    events_topic: str,
    labels_topic: str | None = None,
    rate: float = 0.0,
    max_events: int | None = None,
    duration_s: float | None = None,
    flush_labels: bool = False,
    flush_timeout_s: float = 120.0,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> ProduceResult:
    """Publish ``gen``'s events (and labels, when ``labels_topic`` is set) through ``producer``.

    ``rate`` is events per wall-clock second (0: as fast as possible). The run stops
    after ``max_events`` events or ``duration_s`` wall seconds, whichever comes first
    (at least one is required), or once ``stop`` is set (then it still flushes what it
    sent, so the result counts every acknowledgement). The producer should be made with
    ``delivery_report_only_error=True``: acknowledgements are then counted as sent
    minus failures after the final flush, which keeps per-message callbacks off the
    fast path.

    Example::

        producer = make_producer(platform.kafka, delivery_report_only_error=True)
        result = produce_stream(producer, gen, events_topic="fraud.events", max_events=10_000)
    """
    if not events_topic:
        raise UsageError("events_topic: expected a topic name")
    if rate < 0 or not math.isfinite(rate):
        raise UsageError(f"rate: expected events per second >= 0 (0 = as fast as possible), got {rate!r}")
    if max_events is None and duration_s is None:
        raise UsageError("max_events, duration_s: expected at least one of them, else the run never ends")
    if max_events is not None and max_events < 0:
        raise UsageError(f"max_events: expected a non-negative count, got {max_events}")
    if duration_s is not None and not duration_s >= 0:
        raise UsageError(f"duration_s: expected a non-negative number of seconds, got {duration_s!r}")

    failures = {"events": 0, "labels": 0}
    errors: dict[str, int] = {}

    def on_local_error(topic: str, err: KafkaError) -> None:
        failures["labels" if topic == labels_topic else "events"] += 1
        errors[err.name()] = errors.get(err.name(), 0) + 1

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            on_local_error(msg.topic() or "", err)

    def send(topic: str, pairs: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Queue messages with one ``produce_batch`` call (the same partitioner as
        ``produce``); messages refused because the local queue is full are retried."""
        messages: list[dict[str, Any]] = [{"value": value, "key": key} for value, key in pairs]
        count = len(messages)
        while messages:
            producer.produce_batch(topic, messages, on_delivery=on_delivery)
            refused = [m for m in messages if "_error" in m]
            messages = []
            for m in refused:
                err = m.pop("_error")
                if err.code() == KafkaError._QUEUE_FULL:
                    messages.append(m)
                else:
                    on_local_error(topic, err)
            if messages:
                producer.poll(0.05)  # let librdkafka drain the queue
        return count

    def send_labels(due: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> int:
        if due is None or labels_topic is None:
            return 0
        frame = gen.label_frame(*due)
        return send(labels_topic, zip(gen.encode_labels(frame), gen.label_keys(frame), strict=True))

    batch = max(1, int(rate / 100)) if rate > 0 else gen.chunk_size  # ~10 ms of events per pacing step
    queue = _LabelQueue()
    sent = labels_sent = 0
    clock_s = 0.0
    chunk: Chunk | None = None
    payloads: list[bytes] = []
    keys: list[bytes | None] = []
    pos = 0
    t0 = time.monotonic()
    deadline = t0 + duration_s if duration_s is not None else math.inf
    while max_events is None or sent < max_events:
        now = time.monotonic()
        if now >= deadline or (stop is not None and stop.is_set()):
            break
        if chunk is None or pos >= len(chunk):
            chunk = gen.next_chunk()
            payloads, keys, pos = gen.encode_events(chunk), gen.event_keys(chunk), 0
            if labels_topic:
                lab = chunk.labels
                queue.add(chunk.label_release_s, lab["_index"].to_numpy(), lab[gen.usecase.label.field].to_numpy(),
                          lab["label_time"].to_numpy())
        k = min(batch, len(chunk) - pos, (max_events - sent) if max_events is not None else batch)
        if rate > 0:
            wait = t0 + sent / rate - now
            if wait > 0:
                time.sleep(min(wait, max(0.0, deadline - now)))
                if time.monotonic() >= deadline:
                    break
        sent += send(events_topic, zip(payloads[pos:pos + k], keys[pos:pos + k], strict=True))
        pos += k
        clock_s = float(chunk.arrival_s[pos - 1])
        if labels_topic:
            labels_sent += send_labels(queue.due(clock_s))
        producer.poll(0)
        if progress is not None:
            progress(k, failures["events"] + failures["labels"])
    leftover = queue.remaining(chunk.start_index + pos) if chunk is not None else None
    if labels_topic and flush_labels:
        labels_sent += send_labels(leftover)
        leftover = None
    in_flight = producer.flush(flush_timeout_s)
    elapsed = time.monotonic() - t0
    if progress is not None:
        progress(0, failures["events"] + failures["labels"])
    acked = max(0, sent - failures["events"] - in_flight)
    labels_acked = max(0, labels_sent - failures["labels"] - max(0, in_flight - (sent - failures["events"])))
    result = ProduceResult(
        sent=sent, acked=acked, failed=failures["events"],
        labels_sent=labels_sent, labels_acked=labels_acked, labels_failed=failures["labels"],
        labels_pending=len(leftover[0]) if labels_topic and leftover is not None else 0, in_flight=in_flight,
        elapsed_s=elapsed, simulated_s=clock_s, errors=dict(errors),
        ground_truth=gen.ground_truth(upto_index=chunk.start_index + pos if chunk is not None else 0),
    )
    log.debug("produce %s: %s", events_topic, result.summary())
    return result


def produce_usecase(
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    rate: float = 0.0,
    duration_s: float | None = None,
    events: int | None = None,
    seed: int | None = None,
    scenarios: Iterable[Scenario | str] = (),
    labels: bool = True,
    flush_labels: bool = False,
    speedup: float = 1.0,
    start: str | datetime | None = None,
    progress: ProgressFn | None = None,
    flush_timeout_s: float = 120.0,
    stop: threading.Event | None = None,
) -> ProduceResult:
    """Create ``<uc>.events`` (and ``<uc>.labels``) if missing and publish a simulated stream.

    With ``rate`` > 0 simulated time advances ``speedup`` seconds per wall second
    (events are ``rate / speedup`` per simulated second), and ``duration_s`` fixes
    the count: ``rate * duration_s`` events (a slow machine takes longer). With
    ``rate`` 0 events go out as fast as possible, ``duration_s`` is a wall-clock
    limit and simulated time advances at ``simulator.events_per_hour``. ``start``
    defaults to ``simulator.stream_start`` (then ``simulator.start``).

    Example::

        produce_usecase(platform, load_usecase("fraud"), rate=5000, duration_s=60,
                        scenarios=["covariate_shift@30s:factor=3"])
    """
    if speedup <= 0 or not math.isfinite(speedup):
        raise UsageError(f"speedup: expected simulated seconds per wall second > 0, got {speedup!r}")
    if rate < 0:
        raise UsageError(f"rate: expected events per second >= 0, got {rate!r}")
    max_events = events
    if rate > 0 and duration_s is not None:
        by_time = int(round(rate * duration_s))
        max_events = by_time if max_events is None else min(max_events, by_time)
        duration_s = None
    if max_events is None and duration_s is None:
        raise UsageError("duration_s, events: expected at least one of them")
    sim = usecase.simulator
    gen = make_generator(
        usecase,
        seed=seed,
        start=start if start is not None else sim.get("stream_start") or sim.get("start"),
        events_per_second=rate / speedup if rate > 0 else None,
        scenarios=scenarios,
        diurnal=False,
    )
    topics = [usecase.topic("events")] + ([usecase.topic("labels")] if labels else [])
    ensure_topics(platform.kafka, topics)
    producer = make_producer(platform.kafka, delivery_report_only_error=True)
    return produce_stream(
        producer, gen,
        events_topic=usecase.topic("events"),
        labels_topic=usecase.topic("labels") if labels else None,
        rate=rate, max_events=max_events, duration_s=duration_s,
        flush_labels=flush_labels, flush_timeout_s=flush_timeout_s, progress=progress, stop=stop,
    )
