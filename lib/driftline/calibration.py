"""Drift thresholds that calibrate themselves from the reference (``drift.calibrate``).

A fixed effect-size threshold (PSI 0.2, JS 0.1) says nothing about how much a
statistic moves between windows of *unchanged* data: for a steady feature it
hides a real shift, for a noisy one it alerts on noise. As NannyML does, the
reference rows a model is trained on are split into chunks of event time, each
statistic is computed for every chunk against the whole reference profile, and
each feature's threshold is set from that spread::

    plan = calibration_plan(uc)                    # None when drift.calibrate is not set
    profile = build_reference_profile(train, numeric, categorical, scores=scores)
    profile = calibrate_profile(profile, train, plan, scores=scores)
    profile["numeric"]["amount"]["thresholds"]     # {'js': 0.064, 'psi': 0.021, 'wasserstein': 0.029}
    threshold_for(profile, uc.drift, "numeric", "amount", "psi")   # what the monitor compares with

The rule per (feature, statistic) is ``mean + k * std`` of the chunk values
(``k`` = 3 by default, NannyML's), raised to just above the largest chunk value
when a chunk went beyond it (the statistics are skewed, and real data varies more
than sampling alone), so no reference window reaches its threshold; or the
``quantile`` of the values instead. Either is raised to ``floor`` at least: the
floor keeps a very steady feature from alerting on an effect nobody cares
about. The monitor's other condition, the Benjamini–Hochberg adjusted chi-square
p-value at most ``drift.alpha``, is unchanged.

Chunks: a chunk is one monitoring window of event time (``drift.calibrate.window``,
default ``drift.window``) when the reference holds at least ``drift.min_samples``
rows per window on average and spans at least ``min_windows`` windows. Otherwise
(windows too small, e.g. a sparse history; or too few) a chunk is the length of
event time that holds ``clamp(rows per window, 2 * min_samples, rows / min_windows)``
rows on average (twice ``min_samples``, so that chunks a little emptier than the
average still count). Chunks are consecutive in event time, so slow changes within the
reference (time of day) count as part of its spread. Chunks where a feature has
fewer than ``min_samples`` values are left out for that feature (the monitor never
flags such windows); with fewer than ``min_windows`` chunks left, the feature keeps
its fixed thresholds. At most :data:`MAX_CHUNKS` chunks, spread evenly over the
reference, are counted.

Cost: two Spark jobs per frame (training rows, test scores): the span of event
time, and one aggregation counting every chunk's profile bins and categories.
The small count table (chunks x bins) is collected and the statistics come from
:mod:`driftline.drift`, as in the monitor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from driftline import drift
from driftline.errors import MissingColumnsError, UsageError
from driftline.profile import bin_index

if TYPE_CHECKING:
    from driftline.config import DriftSpec, UseCaseConfig

log = logging.getLogger(__name__)

MAX_CHUNKS = 200
STATISTICS: dict[str, tuple[str, ...]] = {
    "numeric": ("psi", "js", "wasserstein"),
    "categorical": ("psi", "js"),
    "prediction": ("psi", "js", "wasserstein"),
}


@dataclass(frozen=True)
class CalibrationPlan:
    """What :func:`calibrate_profile` needs: the event-time column, the chunk length and the rule.

    Example::

        CalibrationPlan(time_col="event_time", window_s=60, min_samples=500)   # k=3, default floors
    """

    time_col: str
    window_s: int
    min_samples: int
    min_windows: int = 10
    k: float = 3.0
    quantile: float | None = None
    floor: Mapping[str, float] = field(default_factory=lambda: {"psi": 0.01, "js": 0.02, "wasserstein": 0.01})

    def __post_init__(self) -> None:
        if not self.time_col:
            raise UsageError("time_col: expected the name of the event-time column")
        for name in ("window_s", "min_samples"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.min_windows < 3:
            raise UsageError(f"min_windows: expected at least 3 chunks, got {self.min_windows!r}")
        if not self.k > 0:
            raise UsageError(f"k: expected a positive number, got {self.k!r}")
        if self.quantile is not None and not 0.5 < self.quantile <= 1:
            raise UsageError(f"quantile: expected a value in (0.5, 1], got {self.quantile!r}")
        unknown = sorted(set(self.floor) - {"psi", "js", "wasserstein"})
        if unknown or any(v < 0 for v in self.floor.values()):
            raise UsageError(f"floor: expected non-negative psi/js/wasserstein floors, got {dict(self.floor)}")

    @property
    def rule(self) -> str:
        return f"quantile {self.quantile:g}" if self.quantile is not None else f"mean + {self.k:g} * std"


def calibration_plan(uc: UseCaseConfig) -> CalibrationPlan | None:
    """The plan of ``uc.drift.calibrate`` (None when the use case keeps the fixed thresholds).

    Example::

        calibration_plan(load_usecase("fraud"))   # None: fraud.yaml ships with drift.calibrate: null
    """
    spec = uc.drift.calibrate
    if spec is None:
        return None
    return CalibrationPlan(
        time_col=uc.event_time, window_s=uc.drift.calibrate_window_s, min_samples=uc.drift.min_samples,
        min_windows=spec.min_windows, k=spec.k, quantile=spec.quantile, floor=spec.floor.model_dump(),
    )


# --------------------------------------------------------------------------- chunks (pure)


def chunk_length(rows: int, span_s: float, window_s: int, min_samples: int, min_windows: int) -> float | None:
    """Seconds of event time per reference chunk (see the module docstring), None when the
    reference holds fewer than ``min_windows * min_samples`` rows.

        >>> chunk_length(240_000, 7200, 60, 500, 10)    # 2000 rows a minute: one window
        60.0
        >>> chunk_length(1_000_000, 30 * 86400, 60, 500, 10)   # 23 rows a minute: 1000 rows
        2592.0
        >>> chunk_length(100_000, 300, 60, 500, 10)     # 5 windows only: 10 chunks
        30.0
    """
    if rows < min_windows * min_samples:
        return None
    span = max(float(span_s), float(window_s))
    per_window = rows * window_s / span
    if per_window >= min_samples and span / window_s >= min_windows:
        return float(window_s)
    target = min(max(per_window, 2.0 * min_samples), rows / min_windows)
    return span * target / rows


def threshold_of(values: Sequence[float] | np.ndarray, *, k: float = 3.0, quantile: float | None = None,
                 floor: float = 0.0) -> float:
    """The threshold of one statistic from its finite chunk ``values``: ``mean + k * std`` (sample
    std), raised to just above the largest value so that no chunk reaches it, or else the
    ``quantile`` of the values; never below ``floor``.

        >>> round(threshold_of([0.01, 0.02, 0.03], k=3.0), 12)
        0.05
        >>> threshold_of([0.001, 0.002, 0.003], floor=0.01)
        0.01
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise UsageError(f"values: expected at least two finite chunk statistics, got {v.size}")
    if quantile is not None:
        rule = float(np.quantile(v, quantile))
    else:
        # chunk statistics are skewed (chi-square like) and real data is over-dispersed, so mean + k * std
        # alone lets some reference chunks reach it; the monitor flags a value that reaches its threshold
        rule = max(float(v.mean() + k * v.std(ddof=1)), float(np.nextafter(v.max(), np.inf)))
    return max(rule, float(floor))


# --------------------------------------------------------------------------- counting (Spark)


def _seconds(time_col: str) -> Column:
    return F.col(time_col).cast("timestamp").cast("double")


def reference_span(df: DataFrame, time_col: str) -> tuple[int, float | None, float | None]:
    """Rows with an event time, and the first and last event time (epoch seconds), in one aggregation."""
    if time_col not in df.columns:
        raise MissingColumnsError(f"time_col: column {time_col!r} is not in the frame {df.columns}")
    t = _seconds(time_col)
    row = df.agg(F.count(t).alias("n"), F.min(t).alias("lo"), F.max(t).alias("hi")).collect()[0]
    return int(row["n"]), row["lo"], row["hi"]


def chunk_counts(
    df: DataFrame, time_col: str, *, origin_s: float, length_s: float, stride: int,
    numeric: Mapping[str, Sequence[float]], categorical: Sequence[str] = (), numeric_kind: str = "numeric",
) -> pd.DataFrame:
    """Counts per chunk ``floor((t - origin_s) / length_s)`` (every ``stride``-th chunk) of each
    numeric column's profile bins and each categorical column's values, in one aggregation:
    columns ``chunk, kind, feature, bucket, n`` (nulls in no bucket, as in the profile).

    Example::

        chunk_counts(train, "event_time", origin_s=t0, length_s=60.0, stride=1,
                     numeric={"amount": profile["numeric"]["amount"]["edges"]}, categorical=["country"])
    """
    if not length_s > 0 or stride < 1:
        raise UsageError(f"length_s, stride: expected positive values, got {length_s!r}, {stride!r}")
    missing = [c for c in [time_col, *numeric, *categorical] if c not in df.columns]
    if missing:
        raise MissingColumnsError(f"numeric/categorical/time_col: columns {missing} are not in the frame")
    chunk = F.floor((_seconds(time_col) - F.lit(float(origin_s))) / F.lit(float(length_s))).cast("long")

    def item(kind: str, feature: str, bucket: Column) -> Column:
        return F.struct(F.lit(kind).alias("kind"), F.lit(feature).alias("feature"),
                        bucket.cast("string").alias("bucket"))

    items = [item(numeric_kind, c, bin_index(F.col(c), e)) for c, e in numeric.items()]
    items += [item("categorical", c, F.col(c)) for c in categorical]
    if not items:
        return pd.DataFrame({c: [] for c in ("chunk", "kind", "feature", "bucket", "n")})
    counted = (
        df.select(chunk.alias("chunk"), F.explode(F.array(*items)).alias("item"))
        .where(F.col("chunk").isNotNull() & (F.col("chunk") % F.lit(stride) == 0)
               & F.col("item.bucket").isNotNull())
        .groupBy(F.col("chunk"), F.col("item.kind").alias("kind"), F.col("item.feature").alias("feature"),
                 F.col("item.bucket").alias("bucket"))
        .agg(F.count(F.lit(1)).alias("n"))
        .select("chunk", "kind", "feature", "bucket", "n")
    )
    return cast(pd.DataFrame, counted.toPandas())


# --------------------------------------------------------------------------- statistics (pure)


def chunk_statistics(profile: Mapping[str, Any], counts: pd.DataFrame, min_samples: int) -> pd.DataFrame:
    """Each statistic of each chunk against the whole reference profile, for features with at
    least ``min_samples`` values in the chunk: columns ``chunk, kind, feature, statistic, value, n``.
    ``counts`` is a :func:`chunk_counts` table (kind ``prediction`` for the score's bins).

    Example::

        chunk_statistics(profile, chunk_counts(train, "event_time", ...), min_samples=500)
    """
    rows: list[dict[str, Any]] = []
    if counts.empty:
        return pd.DataFrame(rows, columns=["chunk", "kind", "feature", "statistic", "value", "n"])
    for (chunk, kind, feature), sub in counts.groupby(["chunk", "kind", "feature"], sort=True):
        n = int(sub["n"].sum())
        if n < min_samples:
            continue
        values, _ = drift.profile_statistics(profile, str(kind), str(feature), list(sub["bucket"]), list(sub["n"]))
        rows += [{"chunk": int(chunk), "kind": kind, "feature": feature, "statistic": s, "value": float(values[s]),
                  "n": n} for s in STATISTICS[str(kind)]]
    return pd.DataFrame(rows, columns=["chunk", "kind", "feature", "statistic", "value", "n"])


def thresholds_from(statistics: pd.DataFrame, plan: CalibrationPlan) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (kind, feature): ``thresholds`` per statistic and a ``spread`` summary (mean, std, max,
    chunks), for features with at least ``plan.min_windows`` chunks.

    Example::

        thresholds_from(chunk_statistics(profile, counts, 500), plan)[("numeric", "amount")]["thresholds"]
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (kind, feature, stat), sub in statistics.groupby(["kind", "feature", "statistic"], sort=True):
        v = sub["value"].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < plan.min_windows:
            continue
        entry = out.setdefault((str(kind), str(feature)), {"thresholds": {}, "spread": {}})
        entry["thresholds"][stat] = threshold_of(v, k=plan.k, quantile=plan.quantile,
                                                 floor=float(plan.floor.get(str(stat), 0.0)))
        entry["spread"][stat] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "max": float(v.max()),
                                 "chunks": int(v.size)}
    return out


# --------------------------------------------------------------------------- the profile


def _layout(df: DataFrame, plan: CalibrationPlan) -> dict[str, Any] | None:
    """Rows, span, chunk length, origin and stride of ``df``; None when it is too small to chunk."""
    rows, lo, hi = reference_span(df, plan.time_col)
    if lo is None or hi is None:
        return None
    length = chunk_length(rows, hi - lo, plan.window_s, plan.min_samples, plan.min_windows)
    if length is None:
        return None
    # one chunk per monitoring window: aligned as Spark aligns tumbling windows (to the epoch)
    origin = math.floor(lo / length) * length if length == plan.window_s else lo
    chunks = math.floor((hi - origin) / length) + 1
    return {"rows": rows, "span_s": hi - lo, "length_s": length, "origin_s": origin, "chunks": chunks,
            "stride": max(1, math.ceil(chunks / MAX_CHUNKS)),
            "by": "window" if length == plan.window_s else "rows"}


def calibrate_profile(
    profile: Mapping[str, Any], train: DataFrame, plan: CalibrationPlan, *, scores: DataFrame | None = None,
) -> dict[str, Any]:
    """A copy of ``profile`` with calibrated ``thresholds`` in each feature's entry (and the
    prediction's, when ``scores`` with ``plan.time_col`` is given) and a ``calibration`` record.

    ``train`` must be the frame the profile was built from (its bins and categories are
    reused), ``scores`` the frame of its prediction profile. A feature without enough chunks
    gets no thresholds and is listed under ``calibration.uncalibrated``.

    Example::

        profile = calibrate_profile(build_reference_profile(train, ["amount"], ["country"]), train, plan)
    """
    out: dict[str, Any] = {
        **profile,
        "numeric": {c: dict(v) for c, v in profile.get("numeric", {}).items()},
        "categorical": {c: dict(v) for c, v in profile.get("categorical", {}).items()},
    }
    record: dict[str, Any] = {"method": "reference_windows", "rule": plan.rule, "k": plan.k,
                              "quantile": plan.quantile, "floor": dict(plan.floor), "window_s": plan.window_s,
                              "min_samples": plan.min_samples, "min_windows": plan.min_windows, "chunks": {},
                              "spread": {}}
    frames: list[tuple[str, DataFrame, dict[str, Sequence[float]], list[str], str]] = [
        ("features", train, {c: v["edges"] for c, v in out["numeric"].items()}, list(out["categorical"]), "numeric"),
    ]
    if scores is not None and profile.get("prediction") is not None:
        out["prediction"] = dict(profile["prediction"])
        frames.append(("prediction", scores, {out["prediction"]["column"]: out["prediction"]["edges"]}, [],
                       "prediction"))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name, frame, numeric, categorical, numeric_kind in frames:
        layout = _layout(frame, plan)
        record["chunks"][name] = layout
        if layout is None:
            log.warning("drift.calibrate: %s: fewer than min_windows x min_samples = %d rows; fixed thresholds",
                        name, plan.min_windows * plan.min_samples)
            continue
        counts = chunk_counts(frame, plan.time_col, origin_s=layout["origin_s"], length_s=layout["length_s"],
                              stride=layout["stride"], numeric=numeric, categorical=categorical,
                              numeric_kind=numeric_kind)
        found.update(thresholds_from(chunk_statistics(out, counts, plan.min_samples), plan))
    uncalibrated = []
    for kind in ("numeric", "categorical"):
        for feature, entry in out[kind].items():
            got = found.get((kind, feature))
            if got is None:
                uncalibrated.append(f"{kind}:{feature}")
                continue
            entry["thresholds"] = got["thresholds"]
            record["spread"].setdefault(kind, {})[feature] = got["spread"]
    if "prediction" in out and scores is not None:
        got = found.get(("prediction", out["prediction"]["column"]))
        if got is None:
            uncalibrated.append("prediction:score")
        else:
            out["prediction"]["thresholds"] = got["thresholds"]
            record["spread"]["prediction"] = {"score": got["spread"]}
    record["uncalibrated"] = uncalibrated
    if uncalibrated:
        log.warning("drift.calibrate: fixed thresholds for %s (fewer than %d chunks with %d values)",
                    uncalibrated, plan.min_windows, plan.min_samples)
    out["calibration"] = record
    return out


# --------------------------------------------------------------------------- the monitor's lookup


def threshold_for(profile: Mapping[str, Any], spec: DriftSpec, kind: str, feature: str, statistic: str) -> float:
    """The threshold the monitor compares ``statistic`` of ``feature`` with: the calibrated one
    stored in the profile when ``drift.calibrate`` is set and the profile has one (profiles of
    models trained before, or without enough chunks, have none), else the fixed ``drift.<kind>``.

    Example::

        threshold_for(profile, uc.drift, "numeric", "amount", "psi")
    """
    fixed = float(getattr(getattr(spec, kind), statistic))
    if spec.calibrate is None:
        return fixed
    entry = profile.get("prediction") if kind == "prediction" else profile.get(kind, {}).get(feature)
    value = ((entry or {}).get("thresholds") or {}).get(statistic)
    return fixed if value is None else float(value)
