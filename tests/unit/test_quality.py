"""Validation rules on tiny inline bronze frames: each rule quarantines the right
records with the right reason, counts add up, and limits raise with a clear message."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from driftline.config import UseCaseConfig, load_usecase
from driftline.errors import ConfigError, DataQualityError
from driftline.quality import (
    DatasetLimits,
    Limits,
    check_limits,
    classify,
    enforce,
    event_dataset,
    good_records,
    label_dataset,
    quality_report,
    quarantined_records,
)

BRONZE_SCHEMA = (
    "key string, value string, topic string, partition int, offset long, kafka_timestamp timestamp, "
    "ingest_time timestamp"
)
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
RUN_TIME = dt.datetime(2024, 5, 2, tzinfo=dt.UTC)


def usecase(validation: dict[str, Any] | None = None, kind: str = "binary") -> UseCaseConfig:
    return UseCaseConfig.parse({
        "name": "shop", "entity_key": "user", "event_id": "id", "event_time": "ts",
        "schema": [
            {"name": "id", "type": "string", "required": True},
            {"name": "user", "type": "string", "required": True},
            {"name": "amount", "type": "double", "required": True, "min": 0, "max": 100},
            {"name": "kind", "type": "string", "allowed": ["a", "b"]},
            {"name": "note", "type": "string", "max_length": 5},
            {"name": "qty", "type": "int"},
            {"name": "ts", "type": "timestamp", "required": True},
        ],
        "label": {"field": "y", "kind": kind},
        "validation": validation or {},
    })


def event(**overrides: Any) -> str:
    record: dict[str, Any] = {"id": "e1", "user": "u1", "amount": 10.0, "kind": "a", "note": "hi", "qty": 2,
                              "ts": "2024-05-01T10:00:00Z"}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def bronze(spark: SparkSession, values: Sequence[str | None], partition: int = 0) -> DataFrame:
    """Bronze rows at offsets 0..n-1 of one partition; Kafka timestamps follow the offsets."""
    return spark.createDataFrame(
        [(None, v, "shop.events", partition, i, T0 + dt.timedelta(seconds=i), RUN_TIME) for i, v in enumerate(values)],
        BRONZE_SCHEMA,
    )


def reasons_of(classified: DataFrame) -> DataFrame:
    return quarantined_records(classified, "r1", RUN_TIME).select("offset", "reason", "reasons")


def test_every_rule_quarantines_with_its_reason(spark: SparkSession) -> None:
    values = [
        event(id="ok"),                                   # 0 good
        "not json at all",                                # 1
        None,                                             # 2 tombstone
        "[1, 2]",                                         # 3 JSON, not an object
        event(id="m1", user=...),                         # 4 required field absent
        event(id="m2", amount=None),                      # 5 required field null
        event(id="w1", amount="ten"),                     # 6 wrong type
        event(id="w2", qty=2.5),                          # 7 wrong type (not an int)
        event(id="w3", ts="yesterday"),                   # 8 wrong type (not a time)
        event(id="r1", amount=-1),                        # 9 below min
        event(id="r2", amount=100.5),                     # 10 above max
        event(id="n1", kind="z"),                         # 11 not allowed
        event(id="l1", note="too long"),                  # 12 longer than max_length
        event(id="x1", amount=500, kind="z"),             # 13 two rules: both listed, first is the reason
        event(id=..., user=...),                          # 14 the id is always required
        event(id="w4", ts=1_700_000_000_000),             # 15 wrong type (epoch millis, not a time text)
    ]
    classified = classify(bronze(spark, values), event_dataset(usecase()))
    expected = spark.createDataFrame(
        [
            (1, "not_json", ["not_json"]),
            (2, "not_json", ["not_json"]),
            (3, "not_json", ["not_json"]),
            (4, "missing_required:user", ["missing_required:user"]),
            (5, "missing_required:amount", ["missing_required:amount"]),
            (6, "wrong_type:amount", ["wrong_type:amount"]),
            (7, "wrong_type:qty", ["wrong_type:qty"]),
            (8, "wrong_type:ts", ["wrong_type:ts"]),
            (9, "out_of_range:amount", ["out_of_range:amount"]),
            (10, "out_of_range:amount", ["out_of_range:amount"]),
            (11, "not_allowed:kind", ["not_allowed:kind"]),
            (12, "too_long:note", ["too_long:note"]),
            (13, "out_of_range:amount", ["out_of_range:amount", "not_allowed:kind"]),
            (14, "missing_required:id", ["missing_required:id", "missing_required:user"]),
            (15, "wrong_type:ts", ["wrong_type:ts"]),
        ],
        "offset long, reason string, reasons array<string>",
    )
    assertDataFrameEqual(reasons_of(classified), expected)
    good = spark.createDataFrame(
        [("ok", "u1", 10.0, "a", "hi", 2, dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC), "shop.events", 0, 0, RUN_TIME)],
        "id string, user string, amount double, kind string, note string, qty int, ts timestamp, topic string, "
        "partition int, offset long, ingest_time timestamp",
    )
    assertDataFrameEqual(good_records(classified, event_dataset(usecase())), good)


def test_optional_fields_may_be_missing_and_bounds_are_inclusive(spark: SparkSession) -> None:
    values = [event(id="a", kind=..., note=None, qty=...), event(id="b", amount=0), event(id="c", amount=100)]
    classified = classify(bronze(spark, values), event_dataset(usecase()))
    assert reasons_of(classified).count() == 0
    assert sorted(r["id"] for r in good_records(classified, event_dataset(usecase())).collect()) == ["a", "b", "c"]


def test_duplicates_keep_the_first_valid_copy(spark: SparkSession) -> None:
    values = [
        event(id="d1", amount=1),    # 0 kept
        event(id="d2", amount=-5),   # 1 invalid: does not claim the id
        event(id="d1", amount=2),    # 2 duplicate
        event(id="d2", amount=3),    # 3 kept: the first *valid* d2
        event(id="d1", amount=4),    # 4 duplicate
    ]
    classified = classify(bronze(spark, values), event_dataset(usecase()))
    expected = spark.createDataFrame(
        [(1, "out_of_range:amount", ["out_of_range:amount"]), (2, "duplicate", ["duplicate"]),
         (4, "duplicate", ["duplicate"])],
        "offset long, reason string, reasons array<string>",
    )
    assertDataFrameEqual(reasons_of(classified), expected)
    kept = good_records(classified, event_dataset(usecase())).select("id", "amount", "offset")
    assertDataFrameEqual(kept, spark.createDataFrame([("d1", 1.0, 0), ("d2", 3.0, 3)], "id string, amount double, "
                                                                                          "offset long"))


def test_quarantine_keeps_the_raw_record_and_its_coordinates(spark: SparkSession) -> None:
    classified = classify(bronze(spark, ["{oops", event()], partition=3), event_dataset(usecase()))
    expected = spark.createDataFrame(
        [("shop.events", 3, 0, None, "{oops", "not_json", ["not_json"], T0, RUN_TIME, "r1", RUN_TIME)],
        "topic string, partition int, offset long, key string, value string, reason string, reasons array<string>, "
        "kafka_timestamp timestamp, ingest_time timestamp, run_id string, quarantined_at timestamp",
    )
    assertDataFrameEqual(quarantined_records(classified, "r1", RUN_TIME), expected)


def test_report_counts_add_up(spark: SparkSession) -> None:
    values = [event(id="a"), event(id="a"), event(id="b", kind=...), "nope", event(id="c", amount=-1, note="waytoolong"),
              event(id="d", user=None, kind=...)]
    ds = event_dataset(usecase())
    classified = classify(bronze(spark, values), ds)
    report = quality_report(classified, ds, usecase="shop", run_id="r1", run_time=RUN_TIME,
                            source_table="/lake/bronze/shop_events", source_version=7)
    assert (report.records_in, report.records_good, report.records_quarantined, report.duplicates) == (6, 2, 4, 1)
    assert report.records_good + report.records_quarantined == report.records_in
    assert report.reason_counts == {"duplicate": 1, "missing_required:user": 1, "not_json": 1,
                                    "out_of_range:amount": 1}
    assert sum(report.reason_counts.values()) == report.records_quarantined
    assert report.rule_counts == {"not_json": 1, "missing_required": 1, "out_of_range": 1, "too_long": 1,
                                  "duplicate": 1}
    # over the 5 JSON records: kind absent in 2, user null in 1
    assert report.missing_rate == {"id": 0.0, "user": 0.2, "amount": 0.0, "kind": 0.4, "note": 0.0, "qty": 0.0,
                                   "ts": 0.0}
    assert report.quarantine_rate == pytest.approx(4 / 6) and report.duplicate_rate == pytest.approx(1 / 6)
    row = report.to_frame(spark).first()
    assert row is not None
    assert (row["run_id"], row["dataset"], row["source_version"], row["records_quarantined"], row["status"]) == (
        "r1", "events", 7, 4, "ok")
    assert dict(row["reason_counts"]) == report.reason_counts


def _report(spark: SparkSession, values: Sequence[str | None], **validation: Any):  # type: ignore[no-untyped-def]
    ds = event_dataset(usecase(validation))
    return quality_report(classify(bronze(spark, values), ds), ds, usecase="shop", run_id="r", run_time=RUN_TIME), ds


def test_error_limit_raises_naming_the_limit_and_the_observed_value(spark: SparkSession) -> None:
    report, ds = _report(spark, [event(id="a"), "x", "y", event(id="b")], max_quarantine_rate=0.25,
                         warn={"max_quarantine_rate": 0.1})
    with pytest.raises(DataQualityError, match=r"shop events: validation\.max_quarantine_rate = 0\.25 exceeded: "
                                               r"observed 0\.5 \(2 of 4 shop events records quarantined\)"):
        enforce(report, ds.limits)


def test_warn_limits_only_warn(spark: SparkSession, caplog: pytest.LogCaptureFixture) -> None:
    report, ds = _report(spark, [event(id="a"), event(id="a"), event(id="b", kind=...)], max_quarantine_rate=0.5,
                         warn={"max_duplicate_rate": 0.1, "max_missing_rate": {"kind": 0.2}})
    checked = enforce(report, ds.limits)
    assert checked.status == "warn" and checked.violations == ()
    assert [w.split(" exceeded")[0] for w in checked.warnings] == [
        "validation.warn.max_duplicate_rate = 0.1", "validation.warn.max_missing_rate.kind = 0.2"]
    assert "validation.warn.max_duplicate_rate" in caplog.text


def test_check_limits_each_kind(spark: SparkSession) -> None:
    report, _ = _report(spark, [event(id="a"), event(id="a"), event(id="b", kind=...), "x"])
    found = check_limits(report, Limits(max_quarantine_rate=0.4, max_duplicate_rate=0.2,
                                        max_missing_rate={"kind": 0.3, "note": 0.0}))
    assert [(v.key, v.limit, round(v.observed, 4)) for v in found] == [
        ("validation.max_quarantine_rate", 0.4, 0.5),
        ("validation.max_duplicate_rate", 0.2, 0.25),
        ("validation.max_missing_rate.kind", 0.3, 0.3333),
    ]
    assert check_limits(report, DatasetLimits()) == []


def test_binary_labels_accept_booleans_and_0_1(spark: SparkSession) -> None:
    labels = [json.dumps({"id": i, "y": y, "label_time": "2024-05-01T10:05:00Z"})
              for i, y in [("a", True), ("b", 0), ("c", "1"), ("d", "yes"), ("e", 2), ("f", False)]]
    ds = label_dataset(usecase())
    classified = classify(bronze(spark, labels), ds)
    good = good_records(classified, ds).select("id", "y")
    assertDataFrameEqual(good, spark.createDataFrame([("a", 1), ("b", 0), ("c", 1), ("f", 0)], "id string, y int"))
    assertDataFrameEqual(
        reasons_of(classified).select("offset", "reason"),
        spark.createDataFrame([(3, "wrong_type:y"), (4, "wrong_type:y")], "offset long, reason string"),
    )


def test_regression_labels_are_doubles(spark: SparkSession) -> None:
    ds = label_dataset(usecase(kind="regression", validation={"labels": {"time_field": "known_at"}}))
    labels = [json.dumps({"id": "a", "y": 31.5, "known_at": "2024-05-01T10:35:00Z"}),
              json.dumps({"id": "b", "y": 12, "known_at": None})]
    classified = classify(bronze(spark, labels), ds)
    assertDataFrameEqual(
        good_records(classified, ds).select("id", "y", "known_at"),
        spark.createDataFrame([("a", 31.5, dt.datetime(2024, 5, 1, 10, 35, tzinfo=dt.UTC))],
                              "id string, y double, known_at timestamp"),
    )
    assert [r["reason"] for r in reasons_of(classified).collect()] == ["missing_required:known_at"]


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ({"max_quarantine_rate": 1.5}, r"validation\.max_quarantine_rate: got 1\.5"),
        ({"max_quarantne_rate": 0.1}, r"validation\.max_quarantne_rate: unknown key \(value 0\.1\)"),
        ({"max_missing_rate": {"colour": 0.1}}, r"validation\.max_missing_rate: unknown fields \['colour'\]"),
        ({"warn": {"max_missing_rate": {"colour": 0.1}}}, r"validation\.warn\.max_missing_rate: unknown fields"),
    ],
)
def test_bad_validation_section_names_the_key(validation: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        event_dataset(usecase(validation))


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_shipped_use_cases_have_limits(name: str) -> None:
    uc = load_usecase(name)
    assert event_dataset(uc).limits.max_quarantine_rate is not None
    assert label_dataset(uc).fields[1].name == uc.label.field


# --------------------------------------------------------------------------- strict JSON

STRICT_CASES = [
    # (record text, reasons under the default RFC 8259 rules)
    ("{'id': 's1', 'user': 'u1', 'amount': 1.0, 'ts': '2024-05-01T10:00:00Z'}", ["not_json"]),
    ('{"id": "n1", "user": "u1", "amount": NaN, "ts": "2024-05-01T10:00:00Z"}', ["not_json"]),
    ('{"id": "n2", "user": "u1", "amount": "NaN", "ts": "2024-05-01T10:00:00Z"}', ["wrong_type:amount"]),
    ('{"id": "i1", "user": "u1", "amount": Infinity, "ts": "2024-05-01T10:00:00Z"}', ["not_json"]),
    ('{"id": "i2", "user": "u1", "amount": "-Infinity", "ts": "2024-05-01T10:00:00Z"}', ["wrong_type:amount"]),
    ('[{"id": "a1"}]', ["not_json"]),
    ('"just a string"', ["not_json"]),
]


def test_json_is_strict_by_default(spark: SparkSession) -> None:
    classified = classify(bronze(spark, [text for text, _ in STRICT_CASES]), event_dataset(usecase()))
    got = {r["value"]: list(r["reasons"]) for r in classified.select("value", "reasons").collect()}
    assert got == {text: reasons for text, reasons in STRICT_CASES}


def test_a_use_case_may_opt_in_to_lenient_json(spark: SparkSession) -> None:
    lenient = usecase({"json": {"single_quotes": True, "non_numeric_numbers": True}})
    classified = classify(bronze(spark, [text for text, _ in STRICT_CASES[:5]]), event_dataset(lenient))
    got = {r["id"]: (list(r["reasons"]), r["amount"]) for r in
           classified.select("parsed.id", "parsed.amount", "reasons").collect()}
    assert got["s1"] == ([], 1.0)
    # parsed now, so the range rule sees them (Spark orders NaN above every number)
    assert got["n1"][0] == got["n2"][0] == ["out_of_range:amount"]
    assert got["n1"][1] != got["n1"][1] and got["n2"][1] != got["n2"][1]  # NaN
    assert got["i1"] == (["out_of_range:amount"], float("inf"))
    assert got["i2"] == (["out_of_range:amount"], float("-inf"))


def test_unknown_fields_are_counted_per_field_or_quarantined(spark: SparkSession) -> None:
    values = [event(id="e1"), event(id="e2", promo="x"), event(id="e3", promo=None, extra_1={"a": 1}),
              event(id="e4", note=...)]
    counted = classify(bronze(spark, values), event_dataset(usecase()))
    report = quality_report(counted, event_dataset(usecase()), usecase="shop", run_id="r", run_time=RUN_TIME)
    assert report.records_good == 4
    assert report.unknown_fields == {"extra_1": 1, "promo": 2}
    row = report.to_frame(spark).first()
    assert row is not None and row["unknown_fields"] == {"extra_1": 1, "promo": 2}

    forbid = usecase({"json": {"extra": "forbid"}})
    classified = classify(bronze(spark, values), event_dataset(forbid))
    got = {r["id"]: list(r["reasons"]) for r in classified.select("parsed.id", "reasons").collect()}
    assert got == {"e1": [], "e2": ["unknown_field:promo"], "e3": ["unknown_field:extra_1", "unknown_field:promo"],
                   "e4": []}
    forbidden = quality_report(classified, event_dataset(forbid), usecase="shop", run_id="r", run_time=RUN_TIME)
    assert forbidden.rule_counts == {"unknown_field": 2}
    assert forbidden.reason_counts == {"unknown_field:extra_1": 1, "unknown_field:promo": 1}


def test_labels_are_read_with_the_same_rules(spark: SparkSession) -> None:
    values = ['{"id": "e1", "y": 1, "label_time": "2024-05-01T10:05:00Z"}',
              "{'id': 'e2', 'y': 1, 'label_time': '2024-05-01T10:05:00Z'}",
              '{"id": "e3", "y": 0, "label_time": "2024-05-01T10:05:00Z", "source": "manual"}']
    ds = label_dataset(usecase({"json": {"extra": "forbid"}}))
    got = [list(r["reasons"]) for r in classify(bronze(spark, values), ds).orderBy("offset").collect()]
    assert got == [[], ["not_json"], ["unknown_field:source"]]
