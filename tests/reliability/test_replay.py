"""Issue 14, items 3 and 11: a lost commit-log entry and replay determinism.

Item 3: the scoring query runs over some events, the last ``commits/<n>`` file of its
checkpoint is deleted (a crash between the sinks' commits and Spark's), and the query is
restarted: Spark runs batch n again, and the Delta transaction ids (txnAppId = the query,
txnVersion = the batch id) make each sink skip it, so predictions, features_stream and
quarantine hold every record once. The negative control (``idempotent=False``) writes
batch n twice: the duplicates are exactly batch n's rows.

Item 11: that second write of batch n is a replay; its scores, decisions and served
features equal the first attempt's, value for value (same plan, same models, same state).
And the monitor's drift statistics are identical when the same events are monitored
twice, on fresh checkpoints and lakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from rel_support import register_champion, small_usecase, table

from driftline import catalog
from driftline.config import PlatformConfig
from driftline.monitoring import await_all, start_monitor
from driftline.produce import produce_usecase
from driftline.profile import build_reference_profile
from driftline.scoring import PlanLog, start_scoring
from driftline.simulate import make_generator


def run_scoring(spark: SparkSession, platform: PlatformConfig, uc: Any, checkpoint: Path, idempotent: bool) -> None:
    query = start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=str(checkpoint),
                          idempotent=idempotent)
    query.awaitTermination(600)
    assert query.exception() is None


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "idempotence-off"])
def test_a_lost_commit_replays_the_batch_exactly_once_and_identically(
    spark: SparkSession, platform: PlatformConfig, champion_run: str, tmp_path: Path, idempotent: bool
) -> None:
    uc = small_usecase(streaming={"max_offsets_per_trigger": 120})
    register_champion(spark, platform, uc, champion_run)
    produced = produce_usecase(platform, uc, events=300, seed=41, labels=False, scenarios=["malformed:rate=0.15"])
    assert produced.acked == 300
    checkpoint = tmp_path / "cp"
    paths = {k: catalog.path(platform, k, uc) for k in ("predictions", "features_stream", "quarantine_events_stream")}

    run_scoring(spark, platform, uc, checkpoint, idempotent)
    first = {k: table(p) for k, p in paths.items()}
    commits = sorted(int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit())
    last = commits[-1]
    assert last >= 2  # several batches, the last one replayed
    good = first["predictions"]
    assert good["event_id"].is_unique and len(good) + len(first["quarantine_events_stream"]) == 300
    in_last = {"predictions": int((good["batch_id"] == last).sum()),
               "features_stream": int((first["features_stream"]["batch_id"] == last).sum()),
               "quarantine_events_stream": int((first["quarantine_events_stream"]["run_id"] == f"score:{last}").sum())}
    assert min(in_last.values()) > 0, in_last  # the replayed batch writes to every table

    # the commit of the last batch is lost: Spark runs it again on restart
    (checkpoint / "commits" / str(last)).unlink()
    (checkpoint / "commits" / f".{last}.crc").unlink(missing_ok=True)
    plan = PlanLog(spark, str(checkpoint)).get(last)
    run_scoring(spark, platform, uc, checkpoint, idempotent)
    assert sorted(int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit()) == commits
    assert PlanLog(spark, str(checkpoint)).get(last) == plan  # replayed with the plan of its first attempt
    second = {k: table(p) for k, p in paths.items()}

    keys = {"predictions": ["event_id", "route"], "features_stream": [uc.event_id],
            "quarantine_events_stream": ["partition", "offset"]}
    for name, frame in second.items():
        repeats = int(frame.duplicated(keys[name]).sum())
        if idempotent:
            assert repeats == 0 and len(frame) == len(first[name]), name  # the sink skipped the replay
        else:
            assert repeats == in_last[name] and len(frame) == len(first[name]) + in_last[name], name

    if not idempotent:
        # item 11: the replay's rows equal the first attempt's, value for value
        preds = second["predictions"]
        replay = preds[preds.duplicated(["event_id", "route"], keep="first")].set_index(["event_id", "route"])
        original = preds[preds.duplicated(["event_id", "route"], keep="last")].set_index(["event_id", "route"])
        cols = ["score", "prediction", "served", "model_version", "batch_id", "event_time"]
        pd.testing.assert_frame_equal(replay.sort_index()[cols], original.sort_index()[cols])
        feats = second["features_stream"]
        feature_cols = [c for c in feats.columns if c not in ("ingest_time",)]
        pd.testing.assert_frame_equal(
            feats[feats.duplicated(uc.event_id, keep="first")].set_index(uc.event_id).sort_index()[feature_cols[1:]],
            feats[feats.duplicated(uc.event_id, keep="last")].set_index(uc.event_id).sort_index()[feature_cols[1:]])


def test_the_monitor_gives_identical_drift_statistics_on_fresh_checkpoints(
    spark: SparkSession, platform: PlatformConfig, tmp_path: Path
) -> None:
    uc = small_usecase()
    gen = make_generator(uc, seed=3, start="2024-01-01T00:00:00Z", diurnal=False, chunk_size=2000)
    reference = gen.next_chunk().events
    profile = build_reference_profile(spark.createDataFrame(reference[["amount", "merchant_category", "country"]]),
                                      ["amount"], ["merchant_category", "country"], bins=10)
    assert produce_usecase(platform, uc, events=600, seed=43, labels=False,
                           scenarios=["malformed:rate=0.05"]).acked == 600

    outputs = []
    for run in ("a", "b"):
        data = platform.model_dump(mode="json")
        data["lake_root"] = str(tmp_path / run / "lake")
        data["checkpoint_root"] = str(tmp_path / run / "checkpoints")
        fresh = PlatformConfig.model_validate(data)
        await_all(start_monitor(spark, fresh, uc, profile, trigger="availableNow", sources=["events"], alerts=False))
        drift = table(catalog.path(fresh, "drift", uc)).drop(columns="computed_at")
        quality = table(catalog.path(fresh, "quality", uc)).drop(columns="computed_at")
        outputs.append((drift, quality))
    (drift_a, quality_a), (drift_b, quality_b) = outputs
    assert len(drift_a) >= 3 * 2 * 3  # several windows x features x statistics
    for a, b, keys in ((drift_a, drift_b, ["window_start", "feature", "statistic"]),
                       (quality_a, quality_b, ["window_start", "metric", "column"])):
        pd.testing.assert_frame_equal(a.sort_values(keys).reset_index(drop=True),
                                      b.sort_values(keys).reset_index(drop=True))
