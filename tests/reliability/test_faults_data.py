"""Issue 14, items 6 and 7: duplicate delivery and late events, against the real broker.

Item 6: 400 events of a small fraud-like use case, 10% of them sent twice: right after the
original, about 20 events later (out of order), or at the very end, after the stream's
dedupe horizon (``streaming.dedupe_window`` + ``allowed_lateness`` of event time behind
the entity bucket's newest event). The oracle is the set of events the producer got
acknowledgements for. The scoring query serves exactly one prediction per distinct event
id; every repeat is in ``quarantine/<uc>_events_stream`` with reason ``duplicate``; batch
ingest → validate over the same topic counts the same repeats (``monitoring/<uc>_validation``
``duplicates``, ``quarantine/<uc>_events``). A repeat sent after the dedupe window is no
longer in the query's state: it is caught by the lookup of the few events older than their
state among the ids already served. Negative control: without that lookup
(``guard_repeats=False``) those repeats are served a second time, and the test sees it.

Item 7: the stream monitor over events sent in two rounds. Round 2 holds events late but
within ``drift.lateness`` (their windows still open), new events, and events of windows the
watermark already passed. Every window's volume in ``monitoring/<uc>_quality`` equals the
pandas count of the events that were in time, exactly; the events beyond the watermark are
not silently lost: each window's ``late_events`` row counts them, exactly. The control: the
window volumes alone add up to the acknowledged events minus exactly those beyond the
watermark (what a monitor without the count loses silently; the code before this test
only logged it), and volumes + ``late_events`` add up to every acknowledged event.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from rel_support import FRAUD, register_champion, small_usecase, table

from driftline import catalog
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.monitoring import await_all, start_monitor
from driftline.pipelines import ingest, validate
from driftline.profile import build_reference_profile
from driftline.scoring import start_scoring
from driftline.simulate import encode_json_lines, make_generator


def events_frame(uc: UseCaseConfig, n: int, seed: int, start: str) -> pd.DataFrame:
    """``n`` simulated events (schema columns), in event-time order."""
    gen = make_generator(uc, seed=seed, start=start, diurnal=False, chunk_size=n)
    frame = gen.next_chunk().events[[f.name for f in uc.schema_]]
    return frame.sort_values(uc.event_time, kind="stable").reset_index(drop=True)


def send(platform: PlatformConfig, uc: UseCaseConfig, frame: pd.DataFrame, order: list[int]) -> list[dict[str, Any]]:
    """Publish row ``i`` of ``frame`` for each ``i`` of ``order`` (keyed by entity); return one
    record per acknowledged message: position in ``order``, row, partition, offset."""
    values = encode_json_lines(frame, list(uc.schema_))
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")])  # batch ingest reads both
    producer = make_producer(platform.kafka)
    acked: list[dict[str, Any]] = []

    def delivered(position: int, row: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                acked.append({"position": position, "row": row, "partition": msg.partition(),
                              "offset": msg.offset()})
        return report

    for position, i in enumerate(order):
        producer.produce(uc.topic("events"), key=str(frame.at[i, uc.entity_key]).encode(), value=values[i],
                         on_delivery=delivered(position, i))
        producer.poll(0)
    assert producer.flush(60) == 0
    return acked


# --------------------------------------------------------------------------- item 6


def resend_order(n: int, rng: np.random.Generator) -> tuple[list[int], dict[str, set[int]]]:
    """The send order of ``n`` events with 10% of them repeated: right after the original,
    20 events later, or after every original (the oldest events: beyond the dedupe horizon)."""
    per_kind = n // 10 // 3
    after = set(rng.choice(np.arange(0, n // 3), size=n // 10 - 2 * per_kind, replace=False).tolist())
    rest = rng.permutation(np.setdiff1d(np.arange(n // 3, n - 25), list(after)))
    kinds = {"immediate": set(rest[:per_kind].tolist()), "out_of_order": set(rest[per_kind:2 * per_kind].tolist()),
             "after_window": after}
    order: list[int] = []
    for i in range(n):
        order.append(i)
        if i in kinds["immediate"]:
            order.append(i)
        if i - 20 in kinds["out_of_order"]:
            order.append(i - 20)
    order += sorted(after)
    return order, kinds


@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "guard-off"])
def test_repeats_are_served_once_and_counted_alike_in_stream_and_batch(
    spark: SparkSession, platform: PlatformConfig, champion_run: str, tmp_path: Path, guard: bool
) -> None:
    # dedupe horizon: 10 minutes + 2 minutes of lateness (the stream's windows stop at 10m)
    uc = small_usecase(streaming={"max_offsets_per_trigger": 150, "dedupe_window": "10 minutes",
                                  "stream_window_max": "10m", "allowed_lateness": "2 minutes"})
    register_champion(spark, platform, uc, champion_run)
    n = 400
    frame = events_frame(uc, n, seed=61, start="2024-03-01T00:00:00Z")  # 600 events an hour: 40 minutes
    order, kinds = resend_order(n, np.random.default_rng(6))
    acked = send(platform, uc, frame, order)
    assert len(acked) == len(order) == n + n // 10  # the oracle: every message acknowledged
    ids = frame[uc.event_id]
    distinct = set(ids.iloc[sorted({a["row"] for a in acked})])
    assert len(distinct) == n
    repeated = {i for k in kinds.values() for i in k}
    assert len(repeated) == n // 10

    query = start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=str(tmp_path / "cp"),
                          guard_repeats=guard)
    query.awaitTermination(600)
    assert query.exception() is None

    preds = table(catalog.path(platform, "predictions", uc))
    served = preds[preds["served"]]
    assert preds["batch_id"].nunique() >= 3  # the late repeats in the last, their originals in the first
    assert set(served["event_id"]) == distinct  # nothing acknowledged is lost
    quarantine = table(catalog.path(platform, "quarantine_events_stream", uc))
    by_offset = {(a["partition"], a["offset"]): a["row"] for a in acked}
    stream_dups = quarantine[quarantine["reason"] == "duplicate"]
    dup_rows = [by_offset[(int(p), int(o))] for p, o in zip(stream_dups["partition"], stream_dups["offset"],
                                                           strict=True)]
    twice = served["event_id"].value_counts()
    twice = set(twice[twice > 1].index)

    if not guard:
        # the fault: repeats sent after the dedupe window are served again, and not counted
        late_ids = set(ids.iloc[sorted(kinds["after_window"])])
        assert twice and twice <= late_ids, (twice, late_ids)
        assert len(served) == n + len(twice) and len(stream_dups) == n // 10 - len(twice)
        return

    assert twice == set() and len(served) == n  # rows = distinct ids
    assert sorted(dup_rows) == sorted(repeated)  # every repeat counted once, as a duplicate, none else
    assert set(quarantine["reason"]) == {"duplicate"}
    features = table(catalog.path(platform, "features_stream", uc))
    assert len(features) == n and features[uc.event_id].is_unique

    # the batch pipeline over the same topic: the same accounting
    assert ingest.run(spark, platform, uc)["events"] == len(acked)
    report = validate.run(spark, platform, uc)["events"]
    assert report is not None and report.duplicates == len(stream_dups) == n // 10
    assert report.records_good == n
    batch_quarantine = table(catalog.path(platform, "quarantine_events", uc))
    batch_dups = batch_quarantine[batch_quarantine["reason"] == "duplicate"]
    batch_rows = [by_offset[(int(p), int(o))] for p, o in zip(batch_dups["partition"], batch_dups["offset"],
                                                             strict=True)]
    assert sorted(batch_rows) == sorted(dup_rows)
    recorded = table(catalog.path(platform, "validation", uc))
    assert recorded.loc[recorded["dataset"] == "events", "duplicates"].tolist() == [n // 10]


# --------------------------------------------------------------------------- item 7


def timed_events(uc: UseCaseConfig, seed: int, spans: dict[str, tuple[str, str, int]]) -> pd.DataFrame:
    """Simulated events with event times drawn uniformly within each named span
    ``(first, last, count)``; column ``part`` names the span."""
    total = sum(n for _, _, n in spans.values())
    frame = events_frame(uc, total, seed=seed, start="2024-03-01T00:00:00Z")
    rng = np.random.default_rng(seed)
    parts, times = [], []
    for name, (first, last, n) in spans.items():
        lo, hi = pd.Timestamp(first).value // 10**6, pd.Timestamp(last).value // 10**6
        parts += [name] * n
        times.append(np.sort(rng.integers(lo, hi, n)))
    frame[uc.event_time] = pd.to_datetime(np.concatenate(times), unit="ms")
    frame["part"] = parts
    return frame


def test_late_events_within_the_watermark_count_exactly_and_beyond_it_are_counted(
    spark: SparkSession, platform: PlatformConfig, tmp_path: Path
) -> None:
    uc = small_usecase(drift={**FRAUD.raw("drift"), "window": "1m", "lateness": "2m", "origin": "epoch"})
    day = "2024-03-01T00:"
    frame = timed_events(uc, 71, {
        "in_order": (day + "00:00", day + "12:00", 120),   # round 1: windows 00:00 .. 00:11
        "beyond": (day + "02:00", day + "05:00", 15),      # round 2: windows the watermark (~00:09:50) passed
        "within": (day + "09:00", day + "11:50", 15),      # round 2: late, but their windows are still open
        "new": (day + "12:00", day + "15:00", 30),         # round 2: moves the watermark on
    })
    part = frame["part"]
    profile = build_reference_profile(spark.createDataFrame(frame[["amount", "merchant_category", "country"]]),
                                      ["amount"], ["merchant_category", "country"], bins=10)

    acked = send(platform, uc, frame, list(np.flatnonzero(part == "in_order")))
    queries = start_monitor(spark, platform, uc, profile, trigger="1 second", sources=["events"], alerts=False)
    try:
        (query,) = queries.queries
        query.processAllAvailable()  # round 1 in one micro-batch
        quality = table(catalog.path(platform, "quality", uc))
        assert pd.to_datetime(quality["window_end"], utc=True).max() <= pd.Timestamp(day + "10:00", tz="UTC")
        acked += send(platform, uc, frame, list(np.flatnonzero(part.isin(["beyond", "within"]))))
        acked += send(platform, uc, frame, list(np.flatnonzero(part == "new")))  # after the late ones
        query.processAllAvailable()
    finally:
        for q in queries.queries:
            q.stop()
    assert len(acked) == len(frame)  # the oracle: every event acknowledged
    await_all(start_monitor(spark, platform, uc, profile, trigger="availableNow", sources=["events"],
                            alerts=False))  # nothing new: the windows still open are written

    quality = table(catalog.path(platform, "quality", uc))
    quality["window_start"] = pd.to_datetime(quality["window_start"], utc=True)
    window = pd.to_datetime(frame[uc.event_time], utc=True).dt.floor("1min")
    in_time = part != "beyond"
    volume = quality[(quality["metric"] == "volume") & (quality["column"] == "events")]
    got = per_window(volume["window_start"], volume["value"])
    assert got == per_window(*counted(window[in_time]))  # exactly, window by window
    late = quality[quality["metric"] == "late_events"]
    assert set(late["column"]) == {"events"}
    got_late = per_window(late["window_start"], late["value"])
    assert got_late == per_window(*counted(window[~in_time])) and len(got_late) == 3
    # the control: the windows alone miss exactly the events beyond the watermark; with their count
    # every acknowledged event is accounted for
    assert sum(got.values()) == len(acked) - (~in_time).sum() < len(acked)
    assert sum(got.values()) + sum(got_late.values()) == len(acked)


def counted(windows: pd.Series) -> tuple[pd.Series, pd.Series]:
    counts = windows.value_counts()
    return pd.Series(counts.index), pd.Series(counts.to_numpy())


def per_window(starts: pd.Series, values: pd.Series) -> dict[str, float]:
    """``{window start (ISO, UTC): value}``."""
    return {pd.Timestamp(s).isoformat(): float(v) for s, v in zip(starts, values, strict=True)}
