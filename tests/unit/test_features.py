"""Feature compilers on tiny inline frames: exact values per feature kind, no leakage,
and the batch, online and streaming compilers agreeing on the same events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from driftline.config import UseCaseConfig, load_usecase
from driftline.config.sections import window_seconds
from driftline.errors import ConfigError
from driftline.features import (
    feature_spec,
    online_columns,
    online_features,
    point_in_time_features,
    streaming_plan,
    streaming_window_features,
    training_set,
)

EVENTS_SCHEMA = "id string, user string, amount double, shop string, ts timestamp"
LABELS_SCHEMA = "id string, y double, label_time timestamp"


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 1) -> dt.datetime:
    return dt.datetime(2024, 5, day, hh, mm, ss, tzinfo=dt.UTC)


def usecase(features: dict[str, Any]) -> UseCaseConfig:
    return UseCaseConfig.parse({
        "name": "t", "entity_key": "user", "event_id": "id", "event_time": "ts",
        "schema": [
            {"name": "id", "type": "string", "required": True},
            {"name": "user", "type": "string", "required": True},
            {"name": "amount", "type": "double"},
            {"name": "shop", "type": "string"},
            {"name": "ts", "type": "timestamp", "required": True},
        ],
        "label": {"field": "y", "kind": "regression"},
        "features": features,
    })


def agg(name: str, fn: str, window: str, column: str | None = None, source: str = "events") -> dict[str, Any]:
    out = {"name": name, "fn": fn, "window": window, "source": source}
    if column:
        out["column"] = column
    return out


@pytest.fixture()
def events(spark: SparkSession) -> DataFrame:
    # e3 and e4 happen at the same instant; e1 is exactly one hour before them.
    return spark.createDataFrame(
        [
            ("e1", "a", 10.0, "s1", at(10, 0)),
            ("e2", "a", 20.0, "s2", at(10, 30)),
            ("e3", "a", 30.0, "s1", at(11, 0)),
            ("e4", "a", 40.0, "s3", at(11, 0)),
            ("e5", "b", 5.0, "s1", at(10, 45)),
        ],
        EVENTS_SCHEMA,
    )


def features_of(df: DataFrame, *cols: str) -> DataFrame:
    return df.select("id", *cols)


def test_parse_duration() -> None:
    assert [window_seconds(s) for s in ("30s", "10m", "1h", "24h", "7d")] == [30, 600, 3600, 86400, 604800]
    with pytest.raises(ValueError, match="window: expected a positive duration"):
        window_seconds("1w")


def test_count_sum_mean_std_distinct_over_strictly_earlier_events(spark: SparkSession, events: DataFrame) -> None:
    spec = feature_spec(usecase({"aggregates": [
        agg("n_1h", "count", "1h"),
        agg("n_30m", "count", "30m"),
        agg("sum_1h", "sum", "1h", "amount"),
        agg("mean_1h", "mean", "1h", "amount"),
        agg("std_1h", "std", "1h", "amount"),
        agg("shops_1h", "distinct_count", "1h", "shop"),
    ]}))
    got = point_in_time_features(events, spec)
    std = 7.0710678118654755  # sample std of 10 and 20
    expected = spark.createDataFrame(
        [
            # the window [t - w, t) includes its lower bound: e1 counts for e3/e4 (exactly 1h later)
            # and for e2 in 30m; e3 and e4 (same instant) never see each other
            ("e1", 0, 0, 0.0, None, None, 0),
            ("e2", 1, 1, 10.0, 10.0, None, 1),
            ("e3", 2, 1, 30.0, 15.0, std, 2),
            ("e4", 2, 1, 30.0, 15.0, std, 2),
            ("e5", 0, 0, 0.0, None, None, 0),
        ],
        "id string, n_1h long, n_30m long, sum_1h double, mean_1h double, std_1h double, shops_1h long",
    )
    assertDataFrameEqual(features_of(got, *expected.columns[1:]), expected, rtol=1e-9)


def test_count_of_a_column_counts_its_non_null_values(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [("e1", "a", None, "s1", at(10)), ("e2", "a", 3.0, None, at(10, 10)), ("e3", "a", 1.0, "s1", at(10, 20))],
        EVENTS_SCHEMA,
    )
    spec = feature_spec(usecase({"aggregates": [agg("amounts_1h", "count", "1h", "amount"),
                                                agg("shops_1h", "distinct_count", "1h", "shop")]}))
    expected = spark.createDataFrame([("e1", 0, 0), ("e2", 0, 1), ("e3", 1, 1)],
                                     "id string, amounts_1h long, shops_1h long")
    assertDataFrameEqual(features_of(point_in_time_features(events, spec), "amounts_1h", "shops_1h"), expected)


def test_no_leakage_from_the_event_itself_or_anything_later(spark: SparkSession, events: DataFrame) -> None:
    spec = feature_spec(usecase({"aggregates": [agg("sum_7d", "sum", "7d", "amount"),
                                                agg("n_7d", "count", "7d")]}))
    before = point_in_time_features(events, spec)
    later = spark.createDataFrame(
        [("e6", "a", 1000.0, "s9", at(11, 0, 1)), ("e7", "b", 1000.0, "s9", at(12, day=2))], EVENTS_SCHEMA
    )
    after = point_in_time_features(events.unionByName(later), spec)
    # adding later events changes nothing for the earlier ones...
    assertDataFrameEqual(after.where("id NOT IN ('e6', 'e7')"), before)
    # ...and each event's own amount never counts: e2 sees only e1
    expected = spark.createDataFrame(
        [("e1", 0.0, 0), ("e2", 10.0, 1), ("e3", 30.0, 2), ("e4", 30.0, 2), ("e5", 0.0, 0),
         ("e6", 100.0, 4), ("e7", 5.0, 1)],
        "id string, sum_7d double, n_7d long",
    )
    assertDataFrameEqual(features_of(after, "sum_7d", "n_7d"), expected)


def test_label_aggregates_only_see_labels_that_had_arrived(spark: SparkSession, events: DataFrame) -> None:
    labels = spark.createDataFrame(
        [
            ("e1", 1.0, at(10, 40)),   # arrives after e2 (10:30), before e3/e4 (11:00)
            ("e2", 3.0, at(11, 0)),    # arrives at the same instant as e3/e4: not yet known to them
            ("e3", 7.0, at(10, 0)),    # label time before its own event: counts from the event time
            ("e5", 9.0, at(10, 50)),
        ],
        LABELS_SCHEMA,
    )
    spec = feature_spec(usecase({"aggregates": [agg("y_mean_1d", "mean", "1d", "y", source="labels"),
                                                agg("y_count_1d", "count", "1d", source="labels")]}))
    expected = spark.createDataFrame(
        [("e1", None, 0), ("e2", None, 0), ("e3", 1.0, 1), ("e4", 1.0, 1), ("e5", None, 0)],
        "id string, y_mean_1d double, y_count_1d long",
    )
    got = point_in_time_features(events, spec, labels)
    assertDataFrameEqual(features_of(got, "y_mean_1d", "y_count_1d"), expected)
    with pytest.raises(ValueError, match="labels: the feature definitions aggregate labels"):
        point_in_time_features(events, spec)


def test_ratios_of_fields_and_features_are_null_when_undefined(spark: SparkSession, events: DataFrame) -> None:
    spec = feature_spec(usecase({
        "aggregates": [agg("mean_1h", "mean", "1h", "amount"), agg("n_30m", "count", "30m"),
                       agg("n_1h", "count", "1h")],
        "ratios": [{"name": "amount_to_mean", "numerator": "amount", "denominator": "mean_1h"},
                   {"name": "n_30m_to_1h", "numerator": "n_30m", "denominator": "n_1h"}],
    }))
    expected = spark.createDataFrame(
        [("e1", None, None), ("e2", 2.0, 1.0), ("e3", 2.0, 0.5), ("e4", 40.0 / 15.0, 0.5), ("e5", None, None)],
        "id string, amount_to_mean double, n_30m_to_1h double",
    )
    got = point_in_time_features(events, spec)
    assertDataFrameEqual(features_of(got, "amount_to_mean", "n_30m_to_1h"), expected, rtol=1e-12)
    assert "amount" not in got.columns  # a field a ratio reads is not a feature unless declared one


def test_time_of_day_categorical_and_numeric_passthrough(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [("e1", "a", 1.5, "s1", at(23, 30)), ("e2", "a", None, None, at(5, 59)),
         ("e3", "b", 2.0, "s2", at(6, 0)), ("e4", "b", 3.0, "s1", at(12, 0))],
        EVENTS_SCHEMA,
    )
    spec = feature_spec(usecase({"time_of_day": {"hour": "hour", "is_night": "night"},
                                 "numeric": ["amount"], "categorical": ["shop"]}))
    expected = spark.createDataFrame(
        [("e1", "a", at(23, 30), 1.5, "s1", 23, 1), ("e2", "a", at(5, 59), None, None, 5, 1),
         ("e3", "b", at(6, 0), 2.0, "s2", 6, 0), ("e4", "b", at(12, 0), 3.0, "s1", 12, 0)],
        "id string, user string, ts timestamp, amount double, shop string, hour int, night int",
    )
    assertDataFrameEqual(point_in_time_features(events, spec), expected)


def test_training_set_keeps_labelled_events_with_their_label(spark: SparkSession, events: DataFrame) -> None:
    spec = feature_spec(usecase({"aggregates": [agg("n_1h", "count", "1h")]}))
    labels = spark.createDataFrame([("e2", 12.5, at(12)), ("e5", 3.0, at(13)), ("zz", 1.0, at(13))], LABELS_SCHEMA)
    expected = spark.createDataFrame(
        [("e2", "a", at(10, 30), 1, 12.5, at(12)), ("e5", "b", at(10, 45), 0, 3.0, at(13))],
        "id string, user string, ts timestamp, n_1h long, y double, label_time timestamp",
    )
    assertDataFrameEqual(training_set(point_in_time_features(events, spec), labels, spec), expected)


AGGS = [agg("n_1h", "count", "1h"), agg("sum_1h", "sum", "1h", "amount"), agg("mean_1h", "mean", "1h", "amount"),
        agg("std_1h", "std", "1h", "amount"), agg("shops_1h", "distinct_count", "1h", "shop")]


def test_online_snapshot_equals_point_in_time_for_an_event_right_after_as_of(
    spark: SparkSession, events: DataFrame
) -> None:
    spec = feature_spec(usecase({
        "aggregates": AGGS,
        "ratios": [{"name": "n_per_shop", "numerator": "n_1h", "denominator": "shops_1h"},
                   {"name": "amount_to_mean", "numerator": "amount", "denominator": "mean_1h"}],
    }))
    as_of = at(11)
    online = online_features(events, spec, as_of)
    # (10:00, 11:00]: e2, e3, e4 for a; e5 for b. Ratios with event fields are not entity-level.
    expected = spark.createDataFrame(
        [("a", as_of, 3, 90.0, 30.0, 10.0, 3, 1.0), ("b", as_of, 1, 5.0, 5.0, None, 1, 1.0)],
        "user string, as_of timestamp, n_1h long, sum_1h double, mean_1h double, std_1h double, "
        "shops_1h long, n_per_shop double",
    )
    assertDataFrameEqual(online, expected, rtol=1e-12)
    probes = spark.createDataFrame(
        [("pa", "a", None, None, as_of + dt.timedelta(microseconds=1)),
         ("pb", "b", None, None, as_of + dt.timedelta(microseconds=1))],
        EVENTS_SCHEMA,
    )
    pit = point_in_time_features(events.unionByName(probes), spec).where("id IN ('pa', 'pb')")
    assertDataFrameEqual(online.drop("as_of"), pit.select("user", *online.columns[2:]), rtol=1e-12)


def test_streaming_windows_match_point_in_time_at_window_ends(
    spark: SparkSession, events: DataFrame, tmp_path: Path
) -> None:
    spec = feature_spec(usecase({"aggregates": [*AGGS, agg("n_30m", "count", "30m"),
                                                agg("prior_y", "count", "1d", source="labels")]}))
    plan = streaming_plan(spec, slide="30m")
    assert [(w.window_s, w.slide_s, [a.name for a in w.aggregates]) for w in plan] == [
        (1800, 1800, ["n_30m"]), (3600, 1800, [a["name"] for a in AGGS])]  # label aggregates are batch-only
    hourly = plan[1]

    # a real streaming query over the events, with a watermark
    events.write.parquet(str(tmp_path / "events"))
    stream = spark.readStream.schema(events.schema).parquet(str(tmp_path / "events"))
    query = (
        streaming_window_features(stream, spec, hourly, watermark="1 hour")
        .writeStream.format("memory").queryName("feature_windows").outputMode("update")
        .trigger(availableNow=True).start()
    )
    try:
        query.awaitTermination(120)
    finally:
        query.stop()
    windows = spark.table("feature_windows")
    assertDataFrameEqual(windows, streaming_window_features(events, spec, hourly, watermark=None), rtol=1e-12)

    # the window [10:00, 11:00) of user a is what e3 and e4 (at 11:00) get in batch
    names = [a.name for a in hourly.aggregates]
    no_labels = spark.createDataFrame([], LABELS_SCHEMA)
    pit = point_in_time_features(events, spec, no_labels).where("id IN ('e3', 'e4')").select("user", "ts", *names)
    at_window_end = windows.selectExpr("user", "window_end AS ts", *names)
    assertDataFrameEqual(at_window_end.join(pit.select("user", "ts"), ["user", "ts"], "left_semi"),
                         pit.dropDuplicates(), rtol=1e-12)
    expected_a = spark.createDataFrame(
        [("a", at(10), at(11), 2, 30.0, 15.0, 7.0710678118654755, 2)],
        "user string, window_start timestamp, window_end timestamp, n_1h long, sum_1h double, mean_1h double, "
        "std_1h double, shops_1h long",
    )
    assertDataFrameEqual(windows.where("user = 'a' AND window_end = '2024-05-01 11:00:00'"), expected_a, rtol=1e-12)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"aggregates": [agg("x", "mean", "1h")]}, r"features\.aggregates\[0\]\.column: fn 'mean' needs a column"),
        ({"aggregates": [agg("x", "sum", "1h", "shop")]}, r"aggregates\[0\]\.column: 'shop' is not a suitable field"),
        ({"aggregates": [agg("x", "count", "1w")]}, r"aggregates\[0\]\.window: window: expected a positive"),
        ({"aggregates": [agg("x", "count", "1h"), agg("x", "count", "2h")]}, r"'x' is defined twice"),
        ({"aggregates": [agg("amount", "count", "1h")]}, r"'amount' clashes with a field"),
        ({"ratios": [{"name": "r", "numerator": "amount", "denominator": "nope"}]},
         r"ratios\[0\]\.denominator: 'nope' is neither a numeric field"),
        ({"categorical": ["colour"]}, r"categorical\[0\]: 'colour' is not a categorical field"),
        ({"aggregates": [{"name": "x", "fn": "median", "window": "1h"}]}, r"features\.aggregates\.0\.fn"),
        ({"entity": "nobody"}, r"features\.entity: 'nobody' is not a field"),
        ({"entity": "id", "aggregates": [agg("n", "count", "1h")]},
         r"features\.aggregates: the entity is the event itself \('id' is the event_id\).*set features\.entity"),
    ],
)
def test_bad_definitions_name_the_key(features: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        feature_spec(usecase(features))


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_shipped_use_cases_compile(name: str) -> None:
    spec = feature_spec(load_usecase(name))
    assert spec.aggregates and spec.columns()
    assert streaming_plan(spec)


def test_the_entity_may_be_the_event_itself_with_per_event_features_only(spark: SparkSession) -> None:
    uc = UseCaseConfig.parse({
        "name": "t", "entity_key": "id", "event_id": "id", "event_time": "ts",
        "schema": [
            {"name": "id", "type": "string", "required": True},
            {"name": "amount", "type": "double"},
            {"name": "flag", "type": "boolean"},
            {"name": "kind", "type": "string"},
            {"name": "ts", "type": "timestamp", "required": True},
        ],
        "label": {"field": "y", "kind": "binary"},
        "features": {"numeric": ["amount", "flag"], "categorical": ["kind"],
                     "ratios": [{"name": "amount_per_flag", "numerator": "amount", "denominator": "flag"}]},
    })
    spec = feature_spec(uc)
    assert spec.key_columns() == ["id"] and online_columns(spec) == []
    events = spark.createDataFrame(
        [("e1", 10.0, True, "A & B", at(10)), ("e2", 4.0, False, "x/y: 3×", at(11)), ("e3", None, None, None, at(12))],
        "id string, amount double, flag boolean, kind string, ts timestamp",
    )
    labels = spark.createDataFrame([("e1", 1, at(13)), ("e2", 0, at(13))], "id string, y int, label_time timestamp")
    got = training_set(point_in_time_features(events, spec), labels, spec)
    assert got.columns == ["id", "ts", "amount", "flag", "kind", "amount_per_flag", "y", "label_time"]
    rows = {r["id"]: r.asDict() for r in got.collect()}
    assert (rows["e1"]["flag"], rows["e1"]["amount_per_flag"], rows["e1"]["kind"]) == (1.0, 10.0, "A & B")
    assert (rows["e2"]["flag"], rows["e2"]["amount_per_flag"], rows["e2"]["kind"]) == (0.0, None, "x/y: 3×")
