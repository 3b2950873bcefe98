"""Producer throughput (issue 3): the simulator publishing small events as fast as it can,
against plain confluent-kafka loops publishing the same bytes pre-serialized (the ceiling).

    .venv/bin/python -m benchmarks.bench_produce                 # 500k events per measurement
    .venv/bin/python -m benchmarks.bench_produce --events 200000 --repeat 3

Starts its own Apache Kafka broker (KRaft, loopback, free ports) in a temporary
directory and stops it at the end. Every figure is wall time from the first
produce call until ``flush()`` returned with every message acknowledged (acks=all,
idempotent, lz4, the settings of :func:`driftline.kafka.clients.make_producer`).
Measurements (each to its own fresh 4-partition topic):

* ``generate+encode only``: the fraud simulator without Kafka (no broker work);
* ``driftline produce_stream, events``: simulator -> JSON -> Kafka, events only;
* ``driftline produce_stream, events + labels``: the same, and each event's label published
  once it is due (300 s of simulated time later; about 2 messages per event);
* ``baseline produce() loop``: pre-serialized payloads, one ``Producer.produce`` call each;
* ``baseline produce_batch()``: pre-serialized payloads, ``Producer.produce_batch`` per 10k.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform as py_platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message

from driftline.config import PlatformConfig, load_platform, load_usecase
from driftline.kafka.broker import EmbeddedBroker, free_port
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.produce import produce_stream
from driftline.simulate import make_generator

log = logging.getLogger("benchmarks.bench_produce")


def _fresh_topic(platform: PlatformConfig) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    ensure_topics(platform.kafka, [name], partitions=4)
    return name


def _simulator(events_per_second: float = 5000.0) -> Any:
    return make_generator(load_usecase("fraud"), seed=1, events_per_second=events_per_second, diurnal=False)


def bench_generate(n: int) -> dict[str, Any]:
    gen = _simulator()
    t0 = time.perf_counter()
    done = size = 0
    while done < n:
        chunk = gen.next_chunk()
        payloads = gen.encode_events(chunk)
        gen.event_keys(chunk)
        done += len(payloads)
        size += sum(map(len, payloads))
    elapsed = time.perf_counter() - t0
    return {"events": done, "acked": None, "elapsed_s": elapsed, "bytes_per_event": size / done}


def bench_simulator(platform: PlatformConfig, n: int, labels: bool) -> dict[str, Any]:
    events_topic = _fresh_topic(platform)
    labels_topic = _fresh_topic(platform) if labels else None
    # with labels: 50 simulated events/s, so 500k events span ~2.8 simulated hours and
    # nearly every label (due 300 s after its event) is published during the run
    gen = _simulator(50.0 if labels else 5000.0)
    producer = make_producer(platform.kafka, delivery_report_only_error=True)
    result = produce_stream(producer, gen, events_topic=events_topic, labels_topic=labels_topic, max_events=n)
    if not result.ok:
        raise RuntimeError(f"benchmark run lost messages: {result.summary()}")
    return {"events": result.sent, "acked": result.acked, "elapsed_s": result.elapsed_s,
            "labels": result.labels_sent, "labels_acked": result.labels_acked}


def _payloads(n: int) -> tuple[list[bytes], list[bytes | None]]:
    gen = _simulator()
    values: list[bytes] = []
    keys: list[bytes | None] = []
    while len(values) < n:
        chunk = gen.next_chunk()
        values += gen.encode_events(chunk)
        keys += gen.event_keys(chunk)
    return values[:n], keys[:n]


def bench_plain_loop(platform: PlatformConfig, values: list[bytes], keys: list[bytes | None]) -> dict[str, Any]:
    """The textbook loop: produce() per message, poll() now and then, flush()."""
    topic = _fresh_topic(platform)
    failed = 0

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = make_producer(platform.kafka, delivery_report_only_error=True)
    t0 = time.perf_counter()
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    in_flight = producer.flush(120)
    elapsed = time.perf_counter() - t0
    return {"events": len(values), "acked": len(values) - failed - in_flight, "elapsed_s": elapsed}


def bench_plain_batch(platform: PlatformConfig, values: list[bytes], keys: list[bytes | None]) -> dict[str, Any]:
    """produce_batch() of 10k pre-built messages at a time: the transport produce_stream uses."""
    topic = _fresh_topic(platform)
    failed = 0

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = make_producer(platform.kafka, delivery_report_only_error=True)
    t0 = time.perf_counter()
    for start in range(0, len(values), 10_000):
        batch: list[dict[str, Any]] = [{"value": v, "key": k} for v, k in
                                       zip(values[start:start + 10_000], keys[start:start + 10_000], strict=True)]
        while batch:
            producer.produce_batch(topic, batch, on_delivery=on_delivery)
            batch = [m for m in batch if "_error" in m and m.pop("_error").code() == KafkaError._QUEUE_FULL]
            if batch:
                producer.poll(0.05)
        producer.poll(0)
    in_flight = producer.flush(120)
    elapsed = time.perf_counter() - t0
    return {"events": len(values), "acked": len(values) - failed - in_flight, "elapsed_s": elapsed}


def _machine() -> dict[str, str]:
    import os

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"
    return {"cpus": str(os.cpu_count()), "cpu_model": model, "python": py_platform.python_version(),
            "load_average_at_start": load}


def run(events: int = 500_000, repeat: int = 1) -> dict[str, Any]:
    """Start a broker, measure every variant ``repeat`` times, stop the broker; return the figures."""
    if events < 1 or repeat < 1:
        raise ValueError(f"events, repeat: expected positive counts, got {events}, {repeat}")
    base = load_platform(env={})
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        broker = EmbeddedBroker(home=Path(tmp) / "kafka", jars=Path(base.path(base.jars_dir)) / "kafka",
                                port=free_port(), controller_port=free_port())
        broker.start()
        try:
            platform = load_platform(env={}, overrides=[f"kafka.bootstrap_servers={broker.bootstrap}"])
            # warm up: topic metadata, idempotent producer id, JIT-free but caches warm
            bench_simulator(platform, 20_000, labels=False)
            values, keys = _payloads(events)
            variants: dict[str, Callable[[], dict[str, Any]]] = {
                "generate+encode only (no Kafka)": lambda: bench_generate(events),
                "driftline produce_stream, events": lambda: bench_simulator(platform, events, labels=False),
                "driftline produce_stream, events + labels": lambda: bench_simulator(platform, events, labels=True),
                "baseline produce() loop, pre-serialized": lambda: bench_plain_loop(platform, values, keys),
                "baseline produce_batch(), pre-serialized": lambda: bench_plain_batch(platform, values, keys),
            }
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            for _ in range(repeat):
                for name, fn in variants.items():
                    results[name].append(fn())
                    log.info("%s: %.0f events/s", name, events / results[name][-1]["elapsed_s"])
        finally:
            broker.stop()
    summary = {}
    for name, runs in results.items():
        rates = [r["events"] / r["elapsed_s"] for r in runs]
        summary[name] = {"events_per_s_median": statistics.median(rates), "events_per_s_best": max(rates),
                         "runs": runs}
    return {"events": events, "repeat": repeat, "machine": machine, "results": summary,
            "bytes_per_event": results["generate+encode only (no Kafka)"][0]["bytes_per_event"]}


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["| measurement | events/s (median) | events/s (best) | acked / sent |", "|---|---:|---:|---:|"]
    for name, r in report["results"].items():
        last = r["runs"][-1]
        acked = "n/a" if last["acked"] is None else f"{last['acked']:,} / {last['events']:,}"
        if last.get("labels"):
            acked += f" (+ {last['labels_acked']:,} / {last['labels']:,} labels)"
        lines.append(f"| {name} | {r['events_per_s_median']:,.0f} | {r['events_per_s_best']:,.0f} | {acked} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=500_000, help="events per measurement [500000]")
    parser.add_argument("--repeat", type=int, default=1, help="measure each variant this many times [1]")
    parser.add_argument("--json", dest="json_path", help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = run(args.events, args.repeat)
    print(f"machine: {report['machine']}")
    print(f"{report['events']:,} fraud events per measurement, {report['bytes_per_event']:.0f} bytes each on average")
    print(to_markdown(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
