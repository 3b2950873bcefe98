"""Per-entity feature state for the scoring stream: trailing-window aggregates from each
entity's recent events, kept in Structured Streaming's state store instead of re-read
from a table that grows with history.

The definition is the batch compiler's (:func:`driftline.features.point_in_time_features`):
an aggregate of event ``e`` at time ``t`` over window ``w`` sees the same entity's events
with ``t - w <= time < t`` at microsecond resolution (events at the very same instant do
not see each other); ``count`` counts non-null values (every event without a column),
``sum`` is 0.0 over nothing, ``mean`` and ``std`` (sample) are null without enough values,
``distinct_count`` counts distinct non-null values. :func:`window_aggregates` computes that
in numpy for many entities at once.

State layout. Entities are hashed into a fixed number of buckets (``streaming.state_buckets``);
each bucket is one state row holding its entities' recent events as raw arrays, read and
written once per micro-batch. Measured here (2 cores, 50,000 events over 2,000 entities per
batch): one state row per entity costs 7.9 s a batch in ``transformWithStateInPandas`` (the
operator's per-key round trips dominate), 64 buckets 1.7 s, a stateless pass 0.3 s. The
state is bounded by event time: a bucket keeps the events within
``stream_window_max`` (or ``dedupe_window``) + ``allowed_lateness`` of its clock.

    out = window_aggregates(entities, times, columns, n_past, aggregates)
    out["amount_sum_1h"]        # one value per new event
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle

from driftline.config.sections import Aggregate

MICROS = 1_000_000
# A hashed value that stands for null (xxhash64 of a real value is this with probability 2^-64).
NULL_HASH = -(2**63)
# Internal columns are prefixed "dl_": the pandas bridge of transformWithStateInPandas
# renames columns that start with an underscore to positions (_0, _1, ...).
BUCKET = "dl_bucket"  # the state key: pmod(xxhash64(entity), buckets); BAD_BUCKET for bad records
ENTITY = "dl_entity"  # xxhash64 of the entity
TS = "dl_ts_us"       # event time in microseconds
ID_HASH = "dl_id_h"   # xxhash64 of the event id: repeats are found in the state
ARRIVAL = "dl_arrival"  # Kafka timestamp in microseconds: the order repeats are judged in
STALE = "dl_stale"  # output: a new event older than anything its bucket can still hold (see beyond_state)
BAD_BUCKET = -1
DUPLICATE = "duplicate"
_TS_BITS = 42  # event-time offsets up to ~50 days within one bucket and batch share a sort key


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return ~np.isnan(values)
    if values.dtype.kind == "i":
        return values != NULL_HASH
    return np.array([v is not None and v == v for v in values], dtype=bool)


def _sort_keys(entities: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(entity rank, time offset) packed into one int64 per event, or None when the times
    span too much for the packing (then entities are handled one by one)."""
    uniques, rank = np.unique(entities, return_inverse=True)
    base = int(times.min()) if len(times) else 0
    offset = times - base
    if len(uniques) <= 1:  # one entity: the time offset alone is the key
        return offset, np.zeros(len(times), dtype=np.int64), base
    if int(offset.max()) >= 1 << _TS_BITS or int(rank.max()) >= 1 << (62 - _TS_BITS):
        return None
    return (rank.astype(np.int64) << _TS_BITS) | offset, rank.astype(np.int64) << _TS_BITS, base


def window_aggregates(
    entities: np.ndarray,
    times: np.ndarray,
    columns: Mapping[str, np.ndarray],
    n_past: int,
    aggregates: Sequence[Aggregate],
) -> dict[str, np.ndarray]:
    """Each aggregate's value for every new event, for many entities at once.

    The first ``n_past`` entries of ``entities`` / ``times`` (int64 hashes / microseconds)
    and of each array in ``columns`` are kept events of earlier batches, the rest this
    batch's new events, in any order. ``columns`` maps each aggregated column to its values
    (float with NaN for null, int64 hashes with :data:`NULL_HASH` for null). Returns one
    array per aggregate name, aligned with the new events.

    Example::

        window_aggregates(np.array([7, 7]), np.array([0, 60 * MICROS]), {}, 1,
                          [Aggregate(name="n_10m", fn="count", window="10m")])  # {'n_10m': array([1.])}
    """
    entities = np.asarray(entities, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    keys = _sort_keys(entities, times)
    if keys is None:  # a far-flung event time: one entity at a time keeps the offsets small
        merged = {a.name: np.full(len(times) - n_past, np.nan) for a in aggregates}
        new_positions = np.arange(n_past, len(times))
        for entity in np.unique(entities[n_past:]):
            mine = np.flatnonzero(entities == entity)
            past_idx, new_idx = mine[mine < n_past], mine[mine >= n_past]
            part = window_aggregates(entities[np.concatenate([past_idx, new_idx])],
                                     times[np.concatenate([past_idx, new_idx])],
                                     {c: v[np.concatenate([past_idx, new_idx])] for c, v in columns.items()},
                                     len(past_idx), aggregates)
            where = np.searchsorted(new_positions, new_idx)
            for name, values in part.items():
                merged[name][where] = values
        return merged
    composite, entity_start, base = keys
    order = np.argsort(composite, kind="stable")
    sorted_keys = composite[order]
    at = composite[n_past:]
    hi = np.searchsorted(sorted_keys, at, side="left")  # strictly earlier: time < t
    new_offset = times[n_past:] - base
    out: dict[str, np.ndarray] = {}
    for agg in aggregates:
        values = (np.ones(len(times)) if agg.column is None else np.asarray(columns[agg.column]))[order]
        start = entity_start[n_past:] | np.maximum(new_offset - agg.window_s * MICROS, 0)
        lo = np.searchsorted(sorted_keys, start, side="left")
        present = _present(values)
        if agg.fn in ("count", "sum", "mean"):
            counts = np.concatenate([[0], np.cumsum(present)])
            n_in = (counts[hi] - counts[lo]).astype(np.float64)
            if agg.fn == "count":
                out[agg.name] = n_in
                continue
            sums = np.concatenate([[0.0], np.cumsum(np.where(present, values, 0.0).astype(np.float64))])
            total = sums[hi] - sums[lo]
            if agg.fn == "sum":
                out[agg.name] = total
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[agg.name] = np.where(n_in > 0, total / np.maximum(n_in, 1), np.nan)
            continue
        result = np.full(len(at), np.nan)
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            window = values[a:b][present[a:b]]
            if agg.fn == "std":
                if len(window) >= 2:
                    result[i] = float(np.std(window.astype(np.float64), ddof=1))
            else:  # distinct_count
                result[i] = float(len(set(window.tolist())))
        out[agg.name] = result
    return out


# --------------------------------------------------------------------------- the streaming operator


@dataclass(frozen=True)
class StateLayout:
    """What the operator keeps per event, compiled from the stream's aggregates.

    ``dl_v<i>`` holds numeric column ``numeric[i]`` as float64 (NaN for null); ``dl_h<i>``
    the xxhash64 of column ``hashed[i]`` (:data:`NULL_HASH` for null), for distinct counts
    and counts of non-numeric columns (named by position: the state schema takes no user
    names). ``retention_us`` is how much event time a bucket keeps behind its clock,
    ``lateness_us`` how far behind the clock an event may arrive and still see every
    event its windows need.
    """

    aggregates: tuple[Aggregate, ...]
    numeric: tuple[str, ...]
    hashed: tuple[str, ...]
    retention_us: int
    lateness_us: int
    buckets: int

    @classmethod
    def compile(
        cls, aggregates: Sequence[Aggregate], numeric_fields: Sequence[str], *, window_s: int, lateness_s: int,
        buckets: int,
    ) -> StateLayout:
        numeric: list[str] = []
        hashed: list[str] = []
        for a in aggregates:
            if a.column is None:
                continue
            wants_hash = a.fn == "distinct_count" or (a.fn == "count" and a.column not in numeric_fields)
            target = hashed if wants_hash else numeric
            if a.column not in target:
                target.append(a.column)
        return cls(tuple(aggregates), tuple(numeric), tuple(hashed), (window_s + lateness_s) * MICROS,
                   lateness_s * MICROS, buckets)

    def array_of(self, agg: Aggregate) -> str | None:
        """The encoded column ``agg`` reads (None for a count of events)."""
        if agg.column is None:
            return None
        if agg.column in self.numeric and agg.fn != "distinct_count":
            return self.numeric_name(agg.column)
        return self.hashed_name(agg.column)

    def numeric_name(self, column: str) -> str:
        return f"dl_v{self.numeric.index(column)}"

    def hashed_name(self, column: str) -> str:
        return f"dl_h{self.hashed.index(column)}"

    @property
    def encoded(self) -> list[str]:
        return [*(self.numeric_name(c) for c in self.numeric), *(self.hashed_name(c) for c in self.hashed)]

    @property
    def kept(self) -> list[str]:
        """The arrays of one bucket's state row, in order."""
        return [ENTITY, TS, ID_HASH, *self.encoded]

    def state_schema(self) -> str:
        """One row per bucket: each array as raw little-endian bytes (one state read and write per batch)."""
        return ", ".join(f"`{c}` BINARY" for c in self.kept)

    def encoded_aggregates(self) -> list[Aggregate]:
        """The aggregates re-pointed at their encoded columns (what :func:`window_aggregates` reads)."""
        return [a.model_copy(update={"column": self.array_of(a)}) for a in self.aggregates]


def _dtype(name: str) -> type:
    return np.float64 if name.startswith("dl_v") else np.int64


def load_state(row: Any, layout: StateLayout) -> dict[str, np.ndarray]:
    """A bucket's kept events from its state row (empty arrays when it has none)."""
    if row is None:
        return {n: np.empty(0, dtype=_dtype(n)) for n in layout.kept}
    return {n: np.frombuffer(row[i], dtype=_dtype(n)) for i, n in enumerate(layout.kept)}


def bucket_batch(
    past: Mapping[str, np.ndarray], new: pd.DataFrame, layout: StateLayout
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """One bucket's micro-batch: the aggregates of its new events, which of them repeat an
    event id already kept or seen earlier in the batch (by arrival), and the state to keep.

    ``new`` has :data:`ENTITY`, :data:`TS`, :data:`ID_HASH`, :data:`ARRIVAL` and the layout's
    encoded columns. Repeats get no aggregates (NaN) and are not kept. The bucket's clock is
    its newest event time, but never more than ``allowed_lateness`` past the newest arrival
    (so a far-future event time cannot flush the state); events older than the clock minus
    ``retention_us`` are dropped.

    Example::

        values, repeated, keep = bucket_batch(load_state(None, layout), rows, layout)
    """
    ids = new[ID_HASH].to_numpy(np.int64)
    by_arrival = np.argsort(new[ARRIVAL].to_numpy(np.int64), kind="stable")
    first = np.zeros(len(ids), dtype=bool)
    _, first_at = np.unique(ids[by_arrival], return_index=True)
    first[by_arrival[first_at]] = True
    repeated = ~first | np.isin(ids, past[ID_HASH])
    fresh = new[~repeated]
    fresh_cols = {n: fresh[n].to_numpy(_dtype(n)) for n in layout.kept}
    merged = {n: np.concatenate([past[n], fresh_cols[n]]) for n in layout.kept}
    values = window_aggregates(merged[ENTITY], merged[TS], {c: merged[c] for c in layout.encoded}, len(past[TS]),
                               layout.encoded_aggregates())
    out = {a.name: np.full(len(ids), np.nan) for a in layout.aggregates}
    for name, v in values.items():
        out[name][~repeated] = v
    if len(merged[TS]):
        clock = min(int(merged[TS].max()), int(new[ARRIVAL].max()) + layout.lateness_us)
        keep = merged[TS] >= clock - layout.retention_us
        merged = {n: a[keep] for n, a in merged.items()}
    return out, repeated, merged


def beyond_state(past: Mapping[str, np.ndarray], times: np.ndarray, layout: StateLayout) -> np.ndarray:
    """Which new events (event times ``times``, microseconds) are older than the oldest event
    time the bucket can still hold: ``retention_us`` behind its newest kept event. The state
    cannot say whether such an event repeats one it has already forgotten (a repeat sent
    after ``streaming.dedupe_window``), so the scorer checks those few against the event ids
    already served. The newest kept event is never pruned and the bucket's clock never passes
    it, so every event that could have been forgotten is flagged.

    Example::

        beyond_state(load_state(row, layout), batch[TS].to_numpy(), layout)  # array([False, True])
    """
    times = np.asarray(times, dtype=np.int64)
    if not len(past[TS]):
        return np.zeros(len(times), dtype=bool)
    return times < int(past[TS].max()) - layout.retention_us


class BucketFeatures(StatefulProcessor):
    """``transformWithStateInPandas`` processor keyed by entity bucket: the stream aggregates
    of each new event from the events its bucket keeps, repeats of a kept event id marked
    ``duplicate``, and the state brought forward. Rows of :data:`BAD_BUCKET` (records that
    failed validation) pass through untouched. Output: ``output_columns`` (the input's
    pass-through columns, ``reason``/``reasons`` updated for repeats, one column per aggregate,
    and :data:`STALE` when named: a new event :func:`beyond_state`).
    """

    def __init__(self, layout: StateLayout, output_columns: Sequence[str]) -> None:
        self.layout = layout
        self.output_columns = list(output_columns)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("recent", self.layout.state_schema())

    def handleInitialState(self, key: Any, initialState: pd.DataFrame, timerValues: Any) -> None:
        """A new checkpoint's history (the bucket's recent events) becomes its first state."""
        past = load_state(self.state.get() if self.state.exists() else None, self.layout)
        kept = {n: np.concatenate([past[n], initialState[n].to_numpy(_dtype(n))]) for n in self.layout.kept}
        self.state.update(tuple(kept[n].tobytes() for n in self.layout.kept))

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Iterator[pd.DataFrame]:
        batch = pd.concat(list(rows), ignore_index=True)
        if int(key[0]) == BAD_BUCKET:
            for a in self.layout.aggregates:
                batch[a.name] = np.nan
            if STALE in self.output_columns:
                batch[STALE] = False
            yield batch[self.output_columns]
            return
        past = load_state(self.state.get() if self.state.exists() else None, self.layout)
        values, repeated, keep = bucket_batch(past, batch, self.layout)
        for name, v in values.items():
            batch[name] = v
        if STALE in self.output_columns:
            batch[STALE] = beyond_state(past, batch[TS].to_numpy(np.int64), self.layout) & ~repeated
        if repeated.any():
            batch.loc[repeated, "reason"] = DUPLICATE
            batch.loc[repeated, "reasons"] = pd.Series([[DUPLICATE]] * int(repeated.sum()),
                                                       index=batch.index[repeated], dtype=object)
        self.state.update(tuple(keep[n].tobytes() for n in self.layout.kept))
        yield batch[self.output_columns]

    def close(self) -> None:
        pass
