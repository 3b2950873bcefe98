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

from collections.abc import Mapping, Sequence

import numpy as np

from driftline.config.sections import Aggregate

MICROS = 1_000_000


def _values(column: str | None, past: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    if column is None:
        return np.ones(n)
    return np.concatenate([past[column], new[column]])


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return ~np.isnan(values)
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
