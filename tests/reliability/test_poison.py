"""Issue 14, item 8: a poison corpus published with kcat (Debian's Kafka client, not the
project's), mixed with good events of a small fraud-like use case, through the streaming
scoring query (availableNow) and through batch ingest → validate.

Every bad record must end up in quarantine (the stream's and the batch's) and in the
``<uc>.dlq`` topic with its topic, partition and offset; good rows = produced − bad,
exactly; the query stays up; no table gains a column. Kinds the platform accepts by
design (a null key, unknown fields under ``validation.json.extra: count``, far-future and
far-past event times, which the schema does not bound) are asserted as accepted, with
the documented side effect (unknown fields counted per field in the validation report)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from rel_support import kcat, register_champion, small_usecase, table

from driftline import catalog
from driftline.catalog import BRONZE_COLUMNS, PREDICTION_SCHEMA, QUARANTINE_COLUMNS
from driftline.config import PlatformConfig
from driftline.kafka.clients import ensure_topics
from driftline.pipelines import ingest, validate
from driftline.scoring import DLQ_VALUE_MAX, start_scoring
from driftline.simulate import encode_json_lines, make_generator

BIG = 1 << 20  # a 1 MiB value: over Kafka's default message size limit


def poison_corpus(template: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(kind, value, expected reason) for each poison record; expected ``"good"`` for the
    kinds accepted by design. Each record has an event id of its own."""

    def event(kind: str, **changes: Any) -> dict[str, Any]:
        e = {**template, "event_id": f"poison-{kind}"}
        for k, v in changes.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def dumps(e: dict[str, Any]) -> bytes:
        return json.dumps(e, separators=(",", ":")).encode()

    good_json = dumps(event("invalid_json"))
    nested = b"[" * 2000 + b'"deep"' + b"]" * 2000  # beyond Jackson's nesting limit (1000)
    return [
        ("invalid_json", good_json[:-7], "not_json"),
        ("single_quoted", good_json.replace(b'"', b"'").replace(b"invalid_json", b"single_quoted"), "not_json"),
        ("json_array", b"[" + dumps(event("json_array")) + b"]", "not_json"),
        ("blank_value", b"  ", "not_json"),
        ("wrong_type_amount", dumps(event("wrong_type_amount", amount="12.5 EUR")), "wrong_type:amount"),
        ("wrong_type_time", dumps(event("wrong_type_time", event_time=1706745600)), "wrong_type:event_time"),
        ("missing_customer", dumps(event("missing_customer", customer_id=None)), "missing_required:customer_id"),
        ("missing_event_id", dumps({k: v for k, v in event("x").items() if k != "event_id"}),
         "missing_required:event_id"),
        ("huge_value", b'{"event_id":"poison-huge_value","blob":"' + b"x" * BIG + b'"', "not_json"),
        ("invalid_utf8", dumps(event("invalid_utf8")).replace(b'"merchant_id":"', b'"merchant_id":"\xff\xfe\xc3('),
         "not_json"),
        ("bare_nan", dumps(event("bare_nan", amount=12.5)).replace(b"12.5", b"NaN"), "not_json"),
        ("bare_infinity", dumps(event("bare_infinity", amount=12.5)).replace(b"12.5", b"Infinity"), "not_json"),
        ("quoted_nan", dumps(event("quoted_nan", amount="NaN")), "wrong_type:amount"),
        ("deeply_nested", dumps({**event("deeply_nested"), "extra": "X"}).replace(b'"X"', nested), "not_json"),
        ("nested_only", nested, "not_json"),
        # accepted by design
        ("unknown_fields", dumps(event("unknown_fields", promo_code="SPRING", loyalty={"tier": 2})), "good"),
        ("far_future", dumps(event("far_future", event_time="9999-12-31T23:59:59Z")), "good"),
        ("far_past", dumps(event("far_past", event_time="0001-01-01T00:00:00Z")), "good"),
        ("year_10000", dumps(event("year_10000", event_time="+10000-01-01T00:00:00Z")), "good"),  # ISO 8601 expanded
        # an object for a string field is read as its JSON text, as a number is (README: "a number is accepted
        # for a string field"); not quarantined
        ("object_for_string", dumps(event("object_for_string", merchant_id={"id": "m1"})), "good"),
    ]


def raise_message_limit(bootstrap: str, topics: list[str], limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource("topic", t, incremental_configs=[
        ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)]) for t in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def read_topic(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """Every message of ``topic`` (confluent-kafka's Consumer, not the project's helper)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 16_000_000, "max.partition.fetch.bytes": 16_000_000})
    consumer.subscribe([topic])
    out: list[Any] = []
    idle = 0
    try:
        while idle < 10 or len(out) < expected and idle < 60:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                continue
            assert not msg.error(), msg.error()
            out.append(msg)
            idle = 0
    finally:
        consumer.close()
    return out


def test_poison_corpus_is_quarantined_in_the_stream_and_the_batch(
    spark: SparkSession, platform: PlatformConfig, champion_run: str, tmp_path: Path
) -> None:
    uc = small_usecase(streaming={"max_offsets_per_trigger": 80})
    register_champion(spark, platform, uc, champion_run)
    events, dlq = uc.topic("events"), uc.topic("dlq")
    ensure_topics(platform.kafka, [events, uc.topic("labels"), uc.topic("predictions"), dlq], partitions=2)
    raise_message_limit(platform.kafka.bootstrap, [events], 8_000_000)  # the DLQ keeps Kafka's default

    gen = make_generator(uc, seed=11, start="2024-02-01T00:00:00Z", diurnal=False, chunk_size=140)
    frame = gen.next_chunk().events
    fields = list(uc.schema_)
    frame = frame[[f.name for f in fields]].sort_values(uc.event_time, kind="stable").reset_index(drop=True)
    good = encode_json_lines(frame, fields)
    template = json.loads(good[0])
    corpus = poison_corpus(template)
    bad = {f"poison-{kind}" for kind, _, expected in corpus if expected != "good"}
    accepted = {f"poison-{kind}" for kind, _, expected in corpus if expected == "good"}

    # keyed good events with the poison mixed in; the null-key half without -K (kcat sends no key)
    keyed = [str(k).encode() + b"\t" + v for k, v in zip(frame[uc.entity_key], good, strict=True)]
    mixed_keyed = keyed[:70]
    for i, (_, value, _) in enumerate(corpus[::2]):
        mixed_keyed.insert(5 + 6 * i, b"k" + str(i).encode() + b"\t" + value)
    kcat(platform.kafka.bootstrap, events, mixed_keyed, tmp_path, "-K", "\t")
    unkeyed = list(good[70:])
    for i, (_, value, _) in enumerate(corpus[1::2]):
        unkeyed.insert(3 + 6 * i, value)
    kcat(platform.kafka.bootstrap, events, unkeyed, tmp_path)
    produced = len(mixed_keyed) + len(unkeyed)
    assert produced == len(good) + len(corpus)
    n_bad = len(bad)

    # --- the stream: the query stays up and scores every good event once
    query = start_scoring(spark, platform, uc, trigger="availableNow")
    query.awaitTermination(600)
    assert query.exception() is None
    preds = table(catalog.path(platform, "predictions", uc))
    good_ids = set(frame[uc.event_id]) | accepted
    assert set(preds["event_id"]) - good_ids == set(), sorted(quarantined_reasons(platform, uc))
    assert len(preds) == produced - n_bad == len(good_ids)
    assert set(preds["event_id"]) == good_ids and preds["event_id"].is_unique
    assert preds["score"].between(0, 1).all()
    quarantined = table(catalog.path(platform, "quarantine_events_stream", uc))
    assert len(quarantined) == n_bad
    assert set(quarantined["topic"]) == {events}
    coords = set(zip(quarantined["partition"], quarantined["offset"], strict=True))
    assert len(coords) == n_bad
    expected_reason = {f"poison-{k}": r for k, _, r in corpus}
    by_value = {v: expected_reason[f"poison-{k}"] for k, v, _ in corpus}
    for _, row in quarantined.iterrows():
        assert row["value"] is not None
        want = _reason_for(row["value"], by_value)
        assert row["reason"] == want, (row["reason"], want, row["value"][:200])

    # every bad record in <uc>.dlq with its source coordinates (at least once: a set)
    messages = read_topic(platform.kafka.bootstrap, dlq, n_bad)
    dlq_rows = [json.loads(m.value()) for m in messages]
    assert {(r["topic"], r["partition"], r["offset"]) for r in dlq_rows} == {(events, p, o) for p, o in coords}
    assert {r["reason"] for r in dlq_rows} == set(quarantined["reason"])
    # the 1 MiB record reaches the DLQ cut to DLQ_VALUE_MAX characters, saying so; quarantine has it whole
    cut = [r for r in dlq_rows if r["value_truncated"]]
    huge = next(v for k, v, _ in corpus if k == "huge_value")
    assert len(cut) == 1 and cut[0]["value_bytes"] == len(huge) and len(cut[0]["value"]) == DLQ_VALUE_MAX
    assert sorted(quarantined["value"].str.len())[-1] == len(huge)

    # --- the batch: ingest → validate sees the same records and splits them the same way
    added = ingest.run(spark, platform, uc)
    assert added["events"] == produced
    reports = validate.run(spark, platform, uc)
    silver = table(catalog.path(platform, "silver_events", uc))
    assert len(silver) == produced - n_bad and set(silver[uc.event_id]) == good_ids
    batch_q = table(catalog.path(platform, "quarantine_events", uc))
    assert set(zip(batch_q["partition"], batch_q["offset"], strict=True)) == coords
    merged = batch_q.merge(quarantined, on=["partition", "offset"], suffixes=("_batch", "_stream"))
    assert (merged["reason_batch"] == merged["reason_stream"]).all()
    report = reports["events"]
    assert report is not None and report.records_quarantined == n_bad
    assert report.unknown_fields == {"loyalty": 1, "promo_code": 1}  # counted, not quarantined (extra: count)

    # accepted by design, with their values as sent
    by_id = silver.set_index(uc.event_id)
    far = by_id.loc[["poison-far_future", "poison-far_past", "poison-year_10000"], uc.event_time]
    assert [t.year for t in far] == [9999, 1, 10000]
    assert by_id.loc["poison-object_for_string", "merchant_id"] == '{"id":"m1"}'
    assert by_id.loc["poison-unknown_fields", "amount"] == template["amount"]

    # --- no table gained a column from unknown or nested fields
    assert list(preds.columns) == PREDICTION_SCHEMA.fieldNames()
    assert list(silver.columns) == [*[f.name for f in fields], "topic", "partition", "offset", "ingest_time"]
    # bronze keeps each value as received, invalid UTF-8 included (Spark reads it; an Arrow reader such as
    # delta-rs refuses that row's text), so its schema is read from the Delta log
    bronze = DeltaTable(catalog.path(platform, "bronze_events", uc))
    assert [f.name for f in bronze.schema().fields] == list(BRONZE_COLUMNS)
    assert set(batch_q.columns) == {"topic", "partition", "offset", "key", "value", "kafka_timestamp",
                                    "ingest_time", *QUARANTINE_COLUMNS}
    assert set(quarantined.columns) == set(batch_q.columns)
    stream_features = table(catalog.path(platform, "features_stream", uc)).columns
    assert not {"promo_code", "loyalty", "extra", "blob"} & set(stream_features)


def quarantined_reasons(platform: PlatformConfig, uc: Any) -> list[tuple[str, str]]:
    q = table(catalog.path(platform, "quarantine_events_stream", uc))
    return [(r, v[:60]) for r, v in zip(q["reason"], q["value"], strict=True)]


def _reason_for(value: str, by_value: dict[bytes, str]) -> str:
    """The expected reason of a quarantined value (Spark reads invalid UTF-8 bytes as U+FFFD)."""
    for raw, reason in by_value.items():
        if raw.decode("utf-8", errors="replace") == value:
            return reason
    # Spark replaces each invalid byte sequence with one U+FFFD: compare what surrounds them
    for raw, reason in by_value.items():
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in value and value.split("\ufffd")[0] == text.split("\ufffd")[0]:
            return reason
    raise AssertionError(f"an unexpected record in quarantine: {value[:200]!r}")
