"""Issue 3 against a real broker: the simulated stream reaches Kafka exactly as generated,
keyed by the entity key, with labels following in simulated time."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from confluent_kafka import Message, TopicPartition

from driftline.cli import main
from driftline.config import LabelSpec, PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.clients import ensure_topics, make_consumer, make_producer
from driftline.produce import produce_stream, produce_usecase
from driftline.simulate import make_generator


def _fresh(name: str, **update: object) -> UseCaseConfig:
    """A use case with unique topic names, so tests never see each other's messages."""
    uc = load_usecase(name)
    return uc.replace(name=f"{name}{uuid.uuid4().hex[:8]}", **update)


def _consume(platform: PlatformConfig, topic: str, expected: int, timeout_s: float = 60.0) -> list[Message]:
    """Every message of ``topic``; fails if the topic holds more or fewer than ``expected``."""
    consumer = make_consumer(platform.kafka, f"test-{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        assert total == expected, f"{topic} holds {total} messages, expected {expected}"
        consumer.subscribe([topic])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=1.0):
                assert msg.error() is None, msg.error()
                out.append(msg)
        assert len(out) == expected
        return out
    finally:
        consumer.close()


def test_every_event_arrives_once_keyed_by_the_entity_key(platform: PlatformConfig) -> None:
    uc = _fresh("fraud")
    n = 20_000
    result = produce_usecase(platform, uc, rate=0, events=n, seed=9, labels=True, flush_labels=True)
    assert (result.sent, result.acked, result.failed, result.in_flight) == (n, n, 0, 0)
    assert (result.labels_sent, result.labels_acked, result.labels_failed, result.labels_pending) == (n, n, 0, 0)
    assert result.ok and result.errors == {}

    events = _consume(platform, uc.topic("events"), n)
    payloads = [json.loads(m.value()) for m in events]
    ids = [p["event_id"] for p in payloads]
    assert len(set(ids)) == n
    assert all(m.key() == p["customer_id"].encode() for m, p in zip(events, payloads, strict=True))

    # byte for byte what the generator makes for the same seed and start
    gen = make_generator(uc, seed=9, start=uc.simulator["stream_start"], diurnal=False)
    expected = [p for _ in range(2) for p in gen.encode_events(gen.next_chunk())]
    assert sorted(m.value() for m in events) == sorted(expected)

    labels = _consume(platform, uc.topic("labels"), n)
    label_rows = pd.DataFrame([json.loads(m.value()) for m in labels])
    assert [m.key() for m in labels] == [eid.encode() for eid in label_rows["event_id"]]
    joined = label_rows.merge(pd.DataFrame(payloads), on="event_id", how="inner", validate="one_to_one")
    assert len(joined) == n
    delay = pd.to_datetime(joined["label_time"]) - pd.to_datetime(joined["event_time"])
    assert (delay == pd.Timedelta(seconds=300)).all()
    # 0.01 on average over a day, four times as likely between 0 and 6 h: this stream starts at midnight
    hours = pd.to_datetime(joined["event_time"]).dt.hour.to_numpy()
    expected_rate = (0.01 * gen.fraud_hour[hours]).mean()  # type: ignore[attr-defined]
    assert joined["is_fraud"].sum() == pytest.approx(expected_rate * n, abs=4 * (expected_rate * n) ** 0.5)


def test_labels_wait_for_the_simulated_clock(platform: PlatformConfig) -> None:
    uc = _fresh("fraud", label=LabelSpec(field="is_fraud", kind="binary", delay_s=10))
    topics = [uc.topic("events"), uc.topic("labels")]
    ensure_topics(platform.kafka, topics, partitions=2)
    gen = make_generator(uc, seed=1, events_per_second=100, diurnal=False, chunk_size=1000)
    result = produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                            events_topic=topics[0], labels_topic=topics[1], max_events=3000)
    assert (result.sent, result.acked) == (3000, 3000)
    # about 30 simulated seconds of events; labels 10 s after their event: the last ~10 s are not due
    assert result.labels_sent + result.labels_pending == 3000
    assert 1500 < result.labels_sent < 2400
    events = pd.DataFrame([json.loads(m.value()) for m in _consume(platform, topics[0], 3000)])
    labels = pd.DataFrame([json.loads(m.value()) for m in _consume(platform, topics[1], result.labels_sent)])
    last_event = pd.to_datetime(events["event_time"]).max()
    assert (pd.to_datetime(labels["label_time"]) <= last_event).all()
    assert set(labels["event_id"]) <= set(events["event_id"])
    not_sent = events.loc[~events["event_id"].isin(labels["event_id"]), "event_time"]
    assert (pd.to_datetime(not_sent) + pd.Timedelta(seconds=10) > last_event).all()
    assert result.simulated_s == pytest.approx(30, rel=0.1)


def test_target_rate_is_kept(platform: PlatformConfig, topic: str) -> None:
    gen = make_generator(load_usecase("eta"), seed=2, events_per_second=4000, diurnal=False)
    result = produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                            events_topic=topic, rate=4000, max_events=6000)
    assert (result.sent, result.acked, result.failed) == (6000, 6000, 0)
    assert 1.4 <= result.elapsed_s < 4.0  # 1.5 s at 4000/s; slack for a loaded CI machine
    assert result.rate <= 4300
    _consume(platform, topic, 6000)


def test_malformed_events_reach_kafka_as_recorded(platform: PlatformConfig, topic: str) -> None:
    gen = make_generator(load_usecase("fraud"), seed=4, events_per_second=50, diurnal=False,
                         scenarios=["malformed@1000:rate=0.1,size=20000", "duplicates@2000:rate=0.05"])
    result = produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                            events_topic=topic, max_events=8000)
    assert (result.sent, result.acked, result.failed) == (8000, 8000, 0)
    malformed, duplicates = result.ground_truth
    assert malformed["start_index"] == 1000 and malformed["active_events"] == 7000
    values = [m.value() for m in _consume(platform, topic, 8000)]
    not_json = oversized = 0
    for v in values:
        try:
            json.loads(v)
        except json.JSONDecodeError:
            not_json += 1
        oversized += len(v) > 20_000
    # repeats of malformed events are malformed too, hence >=
    assert not_json >= malformed["kinds"]["not_json"] > 100
    assert oversized >= malformed["kinds"]["oversized"] > 100
    ids = [json.loads(v).get("event_id") for v in values if v.endswith(b"}")]
    repeated = len(ids) - len(set(ids))
    assert repeated >= duplicates["affected_events"] * 0.85 > 250


def test_cli_produce_publishes_and_writes_the_ground_truth(
    platform: PlatformConfig, tmp_path: Path
) -> None:
    uc = _fresh("eta")
    conf = tmp_path / f"{uc.name}.yaml"
    conf.write_text(yaml.safe_dump(uc.model_dump(mode="json", by_alias=True)))
    truth = tmp_path / "truth.jsonl"
    result = CliRunner().invoke(main, [
        "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}",
        "produce", "--usecase", str(conf), "--max", "--events", "3000", "--no-progress",
        "--scenario", "late@100:rate=0.5", "--ground-truth", str(truth),
    ])
    assert result.exit_code == 0, result.output
    assert "3000 events sent" in result.output and "3000 acknowledged, 0 failed" in result.output
    record = json.loads(truth.read_text())
    assert (record["scenario"], record["start_index"], record["active_events"]) == ("late", 100, 2900)
    assert "scenario late@100:rate=0.5: from event 100" in result.output
    _consume(platform, uc.topic("events"), 3000)


def test_cli_rejects_a_bad_scenario() -> None:
    result = CliRunner().invoke(main, ["produce", "--usecase", "fraud", "--scenario", "late@soon", "--no-progress"])
    assert result.exit_code == 2
    assert "Invalid value for --scenario" in result.output and "neither an event count" in result.output
