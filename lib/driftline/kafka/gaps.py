"""Offsets a streaming query was to read that Kafka no longer had: a retention gap.

With ``failOnDataLoss`` false Spark's Kafka source skips offsets that retention deleted
before the query read them (it was stopped, or fell behind, for longer than the topic
keeps data), and says so only in a log line. :class:`GapDetector` finds them in each
micro-batch of a ``foreachBatch`` query: the batch was planned to read
``[start, end)`` of each partition (the checkpoint's offsets log: the previous batch's
end offsets and this batch's); when it holds fewer rows than that, the first offset read
in each partition is compared with the start, and the offsets below the partition's log
start offset (Kafka's low watermark, read only then) are the ones lost::

    detector = GapDetector(CheckpointFiles(spark, checkpoint).read, platform.kafka)
    detector.check(batch_df, batch_id, rows=1200)   # [Gap('fraud.events', 0, 120, 180)] or []

Offsets missing for another reason (transaction markers, compaction) are not reported
while Kafka still has the offsets around them (they are above the low watermark).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from driftline.config import KafkaConfig

log = logging.getLogger(__name__)

Offsets = dict[str, dict[int, int]]  # {topic: {partition: offset}}


@dataclass(frozen=True, order=True)
class Gap:
    """Offsets ``[start, end)`` of one topic partition, deleted before they were read."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start

    def text(self) -> str:
        """``fraud.events partition 0 offsets 120..179`` (both ends included)."""
        return f"{self.topic} partition {self.partition} offsets {self.start}..{self.end - 1}"


def source_offsets(text: str | None) -> Offsets:
    """The Kafka offsets in a checkpoint file: a line of Spark's offsets log (``offsets/<n>``:
    a version line, the batch metadata, then ``{"<topic>": {"<partition>": offset}}``) or the
    Kafka source's initial offsets (``sources/0/0``). Empty when there are none.

        source_offsets('v1\\n{"batchWatermarkMs":0}\\n{"t":{"0":5,"1":7}}')   # {'t': {0: 5, 1: 7}}
    """
    out: Offsets = {}
    for line in (text or "").splitlines():
        start = line.find("{")
        if start < 0:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(line[start:])
            if isinstance(data, dict) and data and all(
                isinstance(v, dict) and v and all(isinstance(o, int) for o in v.values()) for v in data.values()
            ):
                for topic, parts in data.items():
                    out[str(topic)] = {int(p): int(o) for p, o in parts.items()}
    return out


def planned_count(start: Offsets, end: Offsets) -> int:
    """How many offsets a batch planned from ``start`` to ``end`` covers (partitions in both)."""
    return sum(max(0, e - start[t][p]) for t, parts in end.items() for p, e in parts.items()
               if p in start.get(t, {}))


def missing_ranges(start: Offsets, end: Offsets, first_read: Mapping[tuple[str, int], int],
                   low: Mapping[tuple[str, int], int]) -> list[Gap]:
    """The gaps of a batch planned from ``start`` to ``end``: in each partition, the offsets
    from its start up to the first one read (``first_read``; none read: the end) that are
    also below its log start offset now (``low``, Kafka's low watermark)."""
    gaps = []
    for topic, parts in end.items():
        for p, e in parts.items():
            s = start.get(topic, {}).get(p)
            if s is None or s >= e:
                continue
            stop = min(first_read.get((topic, p), e), low.get((topic, p), s))
            if stop > s:
                gaps.append(Gap(topic, p, s, stop))
    return sorted(gaps)


class GapDetector:
    """Finds retention gaps in the micro-batches of one query (see the module docstring).

    ``read(name)`` returns a file of the query's checkpoint (None when it does not exist).
    """

    def __init__(self, read: Callable[[str], str | None], kafka: KafkaConfig) -> None:
        self._read = read
        self._kafka = kafka
        self._ends: dict[int, Offsets] = {}

    def _offsets(self, batch_id: int) -> Offsets:
        if batch_id not in self._ends:
            self._ends = {batch_id: source_offsets(self._read(f"offsets/{batch_id}")), **self._ends}
        return self._ends[batch_id]

    def planned(self, batch_id: int) -> tuple[Offsets, Offsets]:
        """The (start, end) offsets of ``batch_id``: the end of the batch before (the first
        batch: the source's initial offsets) and its own."""
        end = self._offsets(batch_id)
        start = self._offsets(batch_id - 1) if batch_id > 0 else {}
        if not start:
            start = source_offsets(self._read("sources/0/0"))
        self._ends = {b: o for b, o in self._ends.items() if b >= batch_id - 1}
        return start, end

    def check(self, batch: DataFrame, batch_id: int, rows: int) -> list[Gap]:
        """The gaps of ``batch`` (with ``topic``, ``partition`` and ``offset`` columns), which
        holds ``rows`` rows. No Spark job and no Kafka request unless it holds fewer rows
        than its offsets planned."""
        start, end = self.planned(batch_id)
        if not end or rows >= planned_count(start, end):
            return []
        first = {(r["topic"], int(r["partition"])): int(r["first"]) for r in
                 batch.groupBy("topic", "partition").agg(F.min("offset").alias("first")).collect()}
        heads = [(t, p) for t, parts in end.items() for p, e in parts.items()
                 if p in start.get(t, {}) and start[t][p] < min(first.get((t, p), e), e)]
        if not heads:
            return []
        from driftline.kafka.spark import kafka_watermarks

        low: dict[tuple[str, int], int] = {}
        for topic in sorted({t for t, _ in heads}):
            low.update({(topic, p): lo for p, (lo, _) in kafka_watermarks(self._kafka, topic).items()})
        gaps = missing_ranges(start, end, first, low)
        for gap in gaps:
            log.warning("batch %d: %d offsets lost: %s were deleted by Kafka before the query read them",
                        batch_id, gap.count, gap.text())
        return gaps
