"""Retention gaps of the scoring query (driftline.kafka.gaps) and their data-loss alert:
pure logic, no Spark job and no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftline.alerts import data_loss_alert
from driftline.errors import UsageError
from driftline.kafka.gaps import Gap, missing_ranges, planned_count, source_offsets

OFFSETS_LOG = ('v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{"spark.sql.shuffle.partitions":"2"}}\n'
               '{"fraud.events":{"1":66,"0":52}}')


def test_offsets_are_read_from_the_offsets_log_and_the_initial_offsets_file() -> None:
    assert source_offsets(OFFSETS_LOG) == {"fraud.events": {0: 52, 1: 66}}
    assert source_offsets('\x00v1\n{"fraud.events":{"0":0,"1":0}}') == {"fraud.events": {0: 0, 1: 0}}
    assert source_offsets(None) == {} and source_offsets("v1\nnot json") == {}


def test_planned_count_covers_the_partitions_in_both_ends() -> None:
    start = {"t": {0: 24, 1: 36}}
    assert planned_count(start, {"t": {0: 52, 1: 66, 2: 5}}) == 28 + 30  # partition 2 is new: not counted


def test_a_gap_is_the_head_of_a_range_below_the_low_watermark() -> None:
    start, end = {"t": {0: 24, 1: 36, 2: 10}}, {"t": {0: 64, 1: 76, 2: 20}}
    first_read = {("t", 0): 53, ("t", 1): 50, ("t", 2): 10}  # partition 1: nothing read below 50
    low = {("t", 0): 53, ("t", 1): 40, ("t", 2): 0}
    # partition 0: 24..52 deleted; partition 1: 36..39 deleted, 40..49 missing for another reason
    # (transaction markers, compaction): not data loss; partition 2: complete
    assert missing_ranges(start, end, first_read, low) == [Gap("t", 0, 24, 53), Gap("t", 1, 36, 40)]
    # a partition with nothing read, wholly deleted
    assert missing_ranges({"t": {0: 5}}, {"t": {0: 9}}, {}, {("t", 0): 12}) == [Gap("t", 0, 5, 9)]
    assert Gap("t", 0, 24, 53).text() == "t partition 0 offsets 24..52" and Gap("t", 0, 24, 53).count == 29


def test_the_data_loss_alert_names_each_range_and_asks_for_no_retraining() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    gaps = [Gap("fraud.events", 1, 36, 67), Gap("fraud.events", 0, 24, 53)]
    alert = data_loss_alert("fraud", gaps, at)
    assert alert.alert_id.startswith("fraud-data-loss-") and not alert.retrain
    assert alert.alert_id == data_loss_alert("fraud", list(reversed(gaps)), datetime.now(UTC)).alert_id
    assert alert.alert_id != data_loss_alert("fraud", gaps[:1], at).alert_id
    assert [(r.source, r.subject, r.statistic, r.value) for r in alert.reasons] == [
        ("kafka", "fraud.events partition 0 offsets 24..52", "offsets_lost", 29.0),
        ("kafka", "fraud.events partition 1 offsets 36..66", "offsets_lost", 31.0),
    ]
    assert alert.window_start == alert.window_end == alert.created_at == at
    with pytest.raises(UsageError):
        data_loss_alert("fraud", [], at)
