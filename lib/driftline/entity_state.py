"""Per-entity feature state for the scoring stream: trailing-window aggregates from the
entity's recent events, kept in Structured Streaming's state store instead of re-read
from a table that grows with history.

The definition is the batch compiler's (:func:`driftline.features.point_in_time_features`):
an aggregate of event ``e`` at time ``t`` over window ``w`` sees the same entity's events
with ``t - w <= time < t`` at microsecond resolution (events at the very same instant do
not see each other); ``count`` counts non-null values (every event without a column),
``sum`` is 0.0 over nothing, ``mean`` and ``std`` (sample) are null without enough values,
``distinct_count`` counts distinct non-null values. :func:`window_aggregates` computes that
in numpy for one entity; the streaming operator (:mod:`driftline.scoring`) calls it once per
entity and micro-batch with the entity's kept events and its new ones.

    out = window_aggregates(past_ts, {"amount": past_amounts}, new_ts, {"amount": new_amounts}, aggregates)
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

# Internal columns are prefixed "dl_": the pandas bridge of transformWithStateInPandas
# renames columns that start with an underscore to positions (_0, _1, ...).

MICROS = 1_000_000
# A hashed value that stands for null (xxhash64 of a real value is this with probability 2^-64).
NULL_HASH = -(2**63)


def _values(column: str | None, past: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    if column is None:
        return np.ones(n)
    return np.concatenate([past[column], new[column]])


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return ~np.isnan(values)
    if values.dtype.kind == "i":
        return values != NULL_HASH
    return np.array([v is not None and v == v for v in values], dtype=bool)


def window_aggregates(
    past_ts: np.ndarray,
    past: Mapping[str, np.ndarray],
    new_ts: np.ndarray,
    new: Mapping[str, np.ndarray],
    aggregates: Sequence[Aggregate],
) -> dict[str, np.ndarray]:
    """Each aggregate's value for every new event of one entity.

    ``past_ts`` / ``new_ts`` are event times in microseconds (int64); ``past`` / ``new``
    map each aggregated column to its values (float with NaN for null, or objects with
    None). The past events are any the entity kept (earlier batches); the new events are
    this batch's, in any order. Returns one array per aggregate name, aligned with ``new_ts``.

    Example::

        window_aggregates(np.array([0]), {}, np.array([60 * MICROS]), {},
                          [Aggregate(name="n_10m", fn="count", window="10m")])  # {'n_10m': array([1.])}
    """
    ts = np.concatenate([np.asarray(past_ts, dtype=np.int64), np.asarray(new_ts, dtype=np.int64)])
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    n = len(ts)
    at = np.asarray(new_ts, dtype=np.int64)
    hi = np.searchsorted(ts_sorted, at, side="left")  # strictly earlier: time < t
    out: dict[str, np.ndarray] = {}
    for agg in aggregates:
        values = _values(agg.column, past, new, n)[order]
        lo = np.searchsorted(ts_sorted, at - agg.window_s * MICROS, side="left")
        present = _present(values)
        if agg.fn in ("count", "sum", "mean"):
            counts = np.concatenate([[0], np.cumsum(present)])
            n_in = (counts[hi] - counts[lo]).astype(np.float64)
            if agg.fn == "count":
                out[agg.name] = n_in
                continue
            numeric = np.where(present, values, 0.0).astype(np.float64)
            sums = np.concatenate([[0.0], np.cumsum(numeric)])
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

KEY = "dl_key"      # the entity as a string; bad records share BAD_KEY and pass through
TS = "dl_ts_us"     # event time in microseconds
ID_HASH = "dl_id_h" # xxhash64 of the event id: repeats are found in the entity's state
BAD_KEY = "\u0000bad"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class StateLayout:
    """Which encoded columns the operator keeps per entity, compiled from the stream's aggregates.

    ``dl_v<i>`` holds numeric column ``numeric[i]`` as float64 (NaN for null); ``dl_h<i>`` the
    xxhash64 of column ``hashed[i]`` (:data:`NULL_HASH` for null), for distinct counts and
    counts of non-numeric columns (names by position: the state schema takes no user names). ``retention_us`` is how much event time an entity keeps behind its newest event.
    """

    aggregates: tuple[Aggregate, ...]
    numeric: tuple[str, ...]
    hashed: tuple[str, ...]
    retention_us: int

    @classmethod
    def compile(cls, aggregates: Sequence[Aggregate], numeric_fields: Sequence[str], retention_s: int) -> StateLayout:
        numeric: list[str] = []
        hashed: list[str] = []
        for a in aggregates:
            if a.column is None:
                continue
            wants_hash = a.fn == "distinct_count" or (a.fn == "count" and a.column not in numeric_fields)
            target = hashed if wants_hash else numeric
            if a.column not in target:
                target.append(a.column)
        return cls(tuple(aggregates), tuple(numeric), tuple(hashed), retention_s * MICROS)

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

    def state_schema(self) -> str:
        """One row per entity: each array as raw little-endian bytes (one state read and write per batch)."""
        return ", ".join(f"`{c}` BINARY" for c in [TS, ID_HASH, *self.encoded])


def _buffers(row: Any, layout: StateLayout) -> dict[str, np.ndarray]:
    names = [TS, ID_HASH, *layout.encoded]
    if row is None:
        return {n: np.empty(0, dtype=np.float64 if n.startswith("dl_v") else np.int64) for n in names}
    return {n: np.frombuffer(row[i], dtype=np.float64 if n.startswith("dl_v") else np.int64)
            for i, n in enumerate(names)}


def entity_batch(
    past: Mapping[str, np.ndarray], new: pd.DataFrame, layout: StateLayout
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """One entity's micro-batch: the aggregates of its new events, which of them repeat an
    event id already seen (in ``past`` or earlier in the batch), and the state to keep.

    ``new`` has :data:`TS`, :data:`ID_HASH` and the layout's encoded columns, in arrival order.
    Repeats get no aggregates (NaN) and are not kept; the kept state is every event within
    ``retention_us`` of the entity's newest event time.

    Example::

        values, repeated, keep = entity_batch(_buffers(None, layout), batch_rows, layout)
    """
    ids = new[ID_HASH].to_numpy(np.int64)
    seen = set(past[ID_HASH].tolist())
    repeated = np.zeros(len(ids), dtype=bool)
    for i, h in enumerate(ids.tolist()):
        if h in seen:
            repeated[i] = True
        else:
            seen.add(h)
    fresh = new[~repeated]
    new_cols = {c: fresh[c].to_numpy() for c in layout.encoded}
    values = window_aggregates(
        past[TS], {c: past[c] for c in layout.encoded},
        fresh[TS].to_numpy(np.int64), new_cols, _encoded_aggregates(layout),
    )
    out = {a.name: np.full(len(ids), np.nan) for a in layout.aggregates}
    for name, v in values.items():
        out[name][~repeated] = v
    merged = {n: np.concatenate([past[n], fresh[n].to_numpy(past[n].dtype)]) for n in (TS, ID_HASH, *layout.encoded)}
    newest = merged[TS].max() if len(merged[TS]) else 0
    keep = merged[TS] >= newest - layout.retention_us
    return out, repeated, {n: a[keep] for n, a in merged.items()}


def _encoded_aggregates(layout: StateLayout) -> list[Aggregate]:
    """The aggregates re-pointed at their encoded columns (what :func:`window_aggregates` reads)."""
    return [a.model_copy(update={"column": layout.array_of(a)}) for a in layout.aggregates]


class EntityFeatures(StatefulProcessor):
    """``transformWithStateInPandas`` processor: per entity, the stream aggregates of each new
    event from the events the entity keeps in state, repeats of a kept event id marked
    ``duplicate``, and the state brought forward. Rows of :data:`BAD_KEY` (records that
    failed validation) pass through untouched. Output: the input columns (encoded columns
    dropped), ``reason``/``reasons`` updated for repeats, and one column per aggregate.
    """

    def __init__(self, layout: StateLayout, output_columns: Sequence[str], ttl_ms: int | None = None) -> None:
        self.layout = layout
        self.output_columns = list(output_columns)
        self.ttl_ms = ttl_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("recent", self.layout.state_schema(), self.ttl_ms)

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Iterator[pd.DataFrame]:
        batch = pd.concat(list(rows), ignore_index=True)
        if key[0] == BAD_KEY:
            for a in self.layout.aggregates:
                batch[a.name] = np.nan
            yield batch[self.output_columns]
            return
        stored = self.state.get() if self.state.exists() else None
        past = _buffers(stored, self.layout)
        values, repeated, keep = entity_batch(past, batch, self.layout)
        for name, v in values.items():
            batch[name] = v
        if repeated.any():
            batch.loc[repeated, "reason"] = DUPLICATE
            batch.loc[repeated, "reasons"] = pd.Series([[DUPLICATE]] * int(repeated.sum()),
                                                       index=batch.index[repeated], dtype=object)
        self.state.update(tuple(keep[n].tobytes() for n in [TS, ID_HASH, *self.layout.encoded]))
        yield batch[self.output_columns]

    def close(self) -> None:
        pass
