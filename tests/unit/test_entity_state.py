"""The stream's per-entity aggregates equal the batch compiler's point-in-time values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from driftline.config import UseCaseConfig
from driftline.entity_state import MICROS, NULL_HASH, window_aggregates
from driftline.features import feature_spec, point_in_time_features

AGGS = [
    {"name": "n_10m", "fn": "count", "window": "10m"},
    {"name": "n_amount_1h", "fn": "count", "column": "amount", "window": "1h"},
    {"name": "sum_1h", "fn": "sum", "column": "amount", "window": "1h"},
    {"name": "mean_1h", "fn": "mean", "column": "amount", "window": "1h"},
    {"name": "std_1h", "fn": "std", "column": "amount", "window": "1h"},
    {"name": "shops_1h", "fn": "distinct_count", "column": "shop", "window": "1h"},
]


def usecase() -> UseCaseConfig:
    return UseCaseConfig.parse({
        "name": "t", "entity_key": "user", "event_id": "id", "event_time": "ts",
        "schema": [{"name": "id", "type": "string", "required": True},
                   {"name": "user", "type": "string", "required": True},
                   {"name": "amount", "type": "double"}, {"name": "shop", "type": "string"},
                   {"name": "ts", "type": "timestamp", "required": True}],
        "label": {"field": "y", "kind": "regression"},
        "features": {"aggregates": AGGS},
    })


def test_window_aggregates_equal_point_in_time_features_split_at_any_batch(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    n = 400
    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    # whole seconds, so several events share an instant; nulls in both aggregated columns
    seconds = np.sort(rng.integers(0, 3 * 3600, size=n))
    frame = pd.DataFrame({
        "id": [f"e{i}" for i in range(n)],
        "user": rng.choice(["a", "b", "c"], size=n),
        "amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 30.0, size=n).round(2)),
        "shop": np.where(rng.random(n) < 0.1, None, rng.choice(["s1", "s2", "s3", "s4"], size=n)),
        "ts": [t0 + dt.timedelta(seconds=int(s)) for s in seconds],
    })
    uc = usecase()
    spec = feature_spec(uc)
    expected = point_in_time_features(spark.createDataFrame(frame, "id string, user string, amount double, "
                                                            "shop string, ts timestamp"), spec).toPandas()
    expected = expected.set_index("id").sort_index()

    ts_us = ((frame["ts"] - t0).dt.total_seconds().to_numpy() * MICROS).astype(np.int64)
    entity = pd.util.hash_array(frame["user"].to_numpy()).astype(np.int64)
    shop = np.array([NULL_HASH if v is None else hash(v) for v in frame["shop"]], dtype=np.int64)
    columns = {"amount": frame["amount"].to_numpy(), "shop": shop}
    got = []
    # three micro-batches over all entities; each sees the earlier ones as past (arrival order = time order)
    bounds = [0, 130, 260, n]
    for a, b in zip(bounds, bounds[1:], strict=False):
        idx = np.concatenate([np.arange(0, a), np.arange(a, b)])
        values = window_aggregates(entity[idx], ts_us[idx], {c: v[idx] for c, v in columns.items()}, a,
                                   spec.aggregates)
        got.append(pd.DataFrame(values, index=frame["id"].iloc[a:b]))
    got_frame = pd.concat(got).sort_index()
    assert list(got_frame.index) == list(expected.index)
    for agg in spec.aggregates:
        pd.testing.assert_series_equal(got_frame[agg.name].astype(float), expected[agg.name].astype(float),
                                       check_names=False, rtol=1e-9, atol=1e-9)
    assert expected["n_10m"].max() >= 3 and expected["std_1h"].notna().any() and expected["std_1h"].isna().any()


def test_far_apart_event_times_fall_back_to_one_entity_at_a_time() -> None:
    agg = [a for a in usecase().features.aggregates if a.name in ("n_10m", "sum_1h")]
    entities = np.array([1, 1, 2, 2, 2], dtype=np.int64)
    times = np.array([0, 60, 0, 30, 10**15], dtype=np.int64) * MICROS // 1000  # one far-future time
    columns = {"amount": np.array([1.0, 2.0, 4.0, 8.0, 16.0]), "shop": np.zeros(5, dtype=np.int64)}
    out = window_aggregates(entities, times, columns, 2, agg)
    assert out["n_10m"].tolist() == [0.0, 1.0, 0.0]
    assert out["sum_1h"].tolist() == [0.0, 4.0, 0.0]


def test_an_event_older_than_its_bucket_can_hold_is_flagged_for_the_served_ids_lookup() -> None:
    from driftline.config.sections import Aggregate
    from driftline.entity_state import ARRIVAL, ENTITY, ID_HASH, TS, StateLayout, beyond_state, bucket_batch, load_state

    layout = StateLayout.compile([Aggregate(name="n_10m", fn="count", window="10m")], [], window_s=600,
                                 lateness_s=120, buckets=1)

    def events(ids: list[int], minutes: list[float]) -> pd.DataFrame:
        t = (np.array(minutes) * 60 * MICROS).astype(np.int64)
        return pd.DataFrame({ENTITY: np.int64(7), TS: t, ID_HASH: np.array(ids, dtype=np.int64),
                             ARRIVAL: np.arange(len(ids), dtype=np.int64) + 10**15})

    _, _, kept = bucket_batch(load_state(None, layout), events([1, 2, 3], [0, 5, 30]), layout)
    assert kept[ID_HASH].tolist() == [3]  # 0 and 5 are more than 12 minutes behind 30: forgotten
    later = events([1, 3, 4, 5], [0, 30, 19, 17.5])  # repeats of 1 (forgotten) and 3 (kept), two new events
    _, repeated, _ = bucket_batch(kept, later, layout)
    assert repeated.tolist() == [False, True, False, False]  # the state cannot tell that 1 repeats
    stale = beyond_state(kept, later[TS].to_numpy(), layout) & ~repeated
    assert stale.tolist() == [True, False, False, True]  # 1 and 17.5 < 30 - 12: looked up among served ids
    assert not beyond_state(load_state(None, layout), later[TS].to_numpy(), layout).any()  # nothing held yet
