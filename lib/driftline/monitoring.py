"""The streaming monitor: drift, input/output quality and online performance per
event-time window, against the champion's reference profile.

One pass, no raw rows on the driver. Each micro-batch is turned into *partial
counts* with built-in aggregations: cells known in advance (volume, missing
values, the profile's numeric bins via :func:`driftline.profile.bin_index` and
its categories) as one ``count_if`` each in a single wide aggregation per window;
values the reference never saw, scores by bin and labels joined to predictions
(confusion cell, score bin) as ``(kind, feature, bucket)`` items counted by
``groupBy``. The partial counts are appended to a small state table per source with
``txnAppId``/``txnVersion`` (a replayed batch adds nothing). Once the watermark
(newest event time seen minus ``drift.lateness``) passes a window's end, its
counts are summed (a table of a few hundred rows, the only thing collected),
the statistics are computed with :mod:`driftline.drift`, the rows are MERGEd
into the output tables by key (a replay rewrites the same rows) and the
window's state is deleted, so state stays bounded by the lateness. Rows later
than the watermark are dropped, as Spark's own watermark would, and counted: per window,
metric ``late_events`` in ``monitoring/<uc>_quality``. The late counts stay in
the state table only until they are MERGEd there (the next window close deletes
them): a monitor that never stops holds the open windows and nothing else.

Windows are tumbling and aligned to ``drift.origin``: the Unix epoch (default;
a window that divides a day then starts at midnight UTC), an ISO 8601 time, or
``training_start``, the first event time of the data the champion was trained on
(:func:`resolve_origin`, from its run's lineage). ``F.window`` gets the origin
modulo the window as its ``startTime`` (:func:`window_offset_us`).

A run that stops by itself (``availableNow``, ``once``) ends before event time
passes its last windows, so :func:`await_all` finishes it with
:meth:`WindowEmitter.flush`: every window still held is emitted and becomes
final. A later run drops rows of a final window as late (and logs how many), so
a window is written once, with the counts it had then; flushing again adds nothing.

Alerts: after an emitter writes closed windows (in :meth:`WindowEmitter.process` and
:meth:`WindowEmitter.flush`), the use case's ``drift.alert`` rule is evaluated by the
:class:`~driftline.alerts.AlertEvaluator` the sources of one :func:`start_monitor` call
share (``alerts=False``: not evaluated). Its lock serializes the source threads, so an
alert is published to ``<uc>.alerts`` once; it reads only the windows near those just
written (the whole history on its first evaluation), see :mod:`driftline.alerts`.

Output tables (:data:`DRIFT_SCHEMA`, :data:`QUALITY_SCHEMA`, :data:`PERFORMANCE_SCHEMA`):
``monitoring/<uc>_drift``, ``monitoring/<uc>_quality``, ``monitoring/<uc>_performance``.

The decision per feature accounts for sample size and for testing many
features at once: a statistic is ``drifted`` when the window has at least
``drift.min_samples`` rows, its value reaches its threshold (effect size) AND
the feature's chi-square p-value, adjusted with Benjamini–Hochberg across the
window's features, is at most ``drift.alpha``::

    spec = drift_spec(uc)
    profile = load_reference_profile(platform, uc)            # the champion's
    counts = event_counts(typed_events, profile, spec, uc)    # static or per micro-batch
    tables = window_tables(counts.toPandas(), profile, spec, uc, computed_at=now)
    await_all(start_monitor(spark, platform, uc, profile, trigger="availableNow"))  # every window, the last too

Known limits: events are validated per micro-batch with
:func:`driftline.quality.classify`, so a duplicate is only caught within its
batch; a record whose event time cannot be read (not JSON, a broken time) or lies
outside 1900–2200 (:data:`EARLIEST_TIME`, :data:`LATEST_TIME`) is in no window and so in no rate; Wasserstein is computed on the profile's bins (see
:mod:`driftline.drift` for how far that is from the raw-value distance); after a
change of ``drift.window`` or ``drift.origin`` the windows already written stay as
they are, and the first new window may overlap the last old one.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from driftline import catalog, drift
from driftline.alerts import AlertEvaluator, evaluate_alerts
from driftline.calibration import threshold_for
from driftline.catalog import (
    COUNT_SCHEMA,
    DRIFT_SCHEMA,
    MONITOR_SOURCES,
    PERFORMANCE_SCHEMA,
    QUALITY_SCHEMA,
    STATE_SCHEMA,
)
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.sections import Bound, DriftSpec
from driftline.delta import delete_rows, is_delta_table, merge_with_retry, read_delta, write_delta
from driftline.errors import ConfigError, MonitorError, UsageError
from driftline.profile import bin_index

log = logging.getLogger(__name__)

SOURCES = MONITOR_SOURCES

COUNT_KEYS = ("window_start", "window_end", "kind", "feature", "bucket")
OUTPUT_KEYS = {
    "drift": ("window_start", "kind", "feature", "statistic"),
    "quality": ("window_start", "metric", "column"),
    "performance": ("window_start", "metric"),
}
OUTPUT_SCHEMAS = {"drift": DRIFT_SCHEMA, "quality": QUALITY_SCHEMA, "performance": PERFORMANCE_SCHEMA}


# --------------------------------------------------------------------------- configuration


def drift_spec(usecase: UseCaseConfig) -> DriftSpec:
    """The use case's ``drift:`` section (parsed and checked at load).

    Example::

        drift_spec(load_usecase("fraud")).numeric.psi   # 0.2
    """
    return usecase.drift


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROS = 1_000_000


def window_offset_us(spec: DriftSpec) -> int:
    """Where a window starts, in microseconds after a multiple of ``drift.window`` since the
    epoch: ``drift.origin`` modulo the window (0 for ``epoch``), the ``startTime`` of ``F.window``.

    Example::

        window_offset_us(spec.model_copy(update={"origin": "2024-01-01T00:00:25+00:00"}))  # 1m: 25_000_000
    """
    if spec.origin == "epoch":
        return 0
    if spec.origin == "training_start":
        raise UsageError("spec: drift.origin training_start must be resolved first (resolve_origin)")
    origin = dt.datetime.fromisoformat(spec.origin)
    return ((origin - EPOCH) // dt.timedelta(microseconds=1)) % (spec.window_s * MICROS)


def _window(time: Column, window_s: int, offset_us: int) -> Column:
    if window_s <= 0:
        raise UsageError(f"window_s: expected a positive number of seconds, got {window_s}")
    if not 0 <= offset_us < window_s * MICROS:
        raise UsageError(f"offset_us: expected 0 <= offset < {window_s * MICROS} (the window), got {offset_us}")
    start = f"{offset_us} microseconds" if offset_us else None
    return F.window(time, f"{window_s} seconds", startTime=start)


# --------------------------------------------------------------------------- reference profile


def load_reference_profile(platform: PlatformConfig, uc: UseCaseConfig, alias: str = "champion") -> dict[str, Any]:
    """The reference profile logged with the model behind ``alias`` (MLflow artifact).

    Example::

        profile = load_reference_profile(platform, load_usecase("fraud"))
        profile["numeric"]["amount"]["edges"]
    """
    import mlflow

    from driftline.registry import alias_version, client_for, model_name
    from driftline.tracking import PROFILE_ARTIFACT

    client = client_for(platform)
    name = model_name(uc)
    version = alias_version(client, name, alias)
    if version is None:
        raise MonitorError(f"alias: model {name} has no version with alias {alias!r}; train and promote one first")
    run_id = client.get_model_version(name, str(version)).run_id
    if not run_id:
        raise MonitorError(f"{name} v{version} has no MLflow run, so no reference profile")
    profile = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PROFILE_ARTIFACT}")
    return {**profile, "model_version": version}


def training_start(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig,
                   alias: str = "champion") -> dt.datetime:
    """The first event time of the data the model behind ``alias`` was trained on: the labelled
    rows of the table its run recorded (params ``data.path``, ``data.version``) at that version.
    With the default time split these are the first rows of its training split.

    Example::

        training_start(spark, platform, load_usecase("fraud"))   # datetime(2024, 1, 1, 0, 0, 0, 31000, UTC)
    """
    from driftline.registry import alias_version, client_for, model_name

    client = client_for(platform)
    name = model_name(uc)
    version = alias_version(client, name, alias)
    if version is None:
        raise MonitorError(f"drift.origin: training_start needs a model with alias {alias!r}, and {name} has "
                           "none; train and promote one, or set drift.origin to epoch or a time")
    run_id = client.get_model_version(name, str(version)).run_id
    params = client.get_run(run_id).data.params if run_id else {}
    path, data_version = params.get("data.path"), params.get("data.version")
    if not path or data_version is None:
        raise MonitorError(f"drift.origin: training_start: {name} v{version} has no run recording its training "
                           "data (params data.path, data.version); set drift.origin to epoch or a time")
    try:
        rows = read_delta(spark, path, int(data_version))
        if uc.label.field in rows.columns:
            rows = rows.where(F.col(uc.label.field).isNotNull())
        first = rows.agg(F.unix_micros(F.min(F.col(uc.event_time).cast("timestamp"))).alias("us")).first()
    except Exception as e:  # noqa: BLE001 - a vacuumed or moved table: say which one
        raise MonitorError(f"drift.origin: training_start: cannot read the training data of {name} v{version} "
                           f"({path} at version {data_version}): {e}") from e
    if first is None or first["us"] is None:
        raise MonitorError(f"drift.origin: training_start: {path} at version {data_version} has no labelled row "
                           f"with an {uc.event_time}")
    return EPOCH + dt.timedelta(microseconds=int(first["us"]))


def resolve_origin(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, spec: DriftSpec,
                   alias: str = "champion") -> DriftSpec:
    """``spec`` with ``origin: training_start`` replaced by that time (:func:`training_start` of
    the model behind ``alias``); any other origin is returned as it is.

    Example::

        spec = resolve_origin(spark, platform, uc, uc.drift)
        spec.origin   # '2024-01-01T00:00:00.031000+00:00'
    """
    if spec.origin != "training_start":
        return spec
    first = training_start(spark, platform, uc, alias)
    log.info("monitor %s: windows aligned to the first training event time %s", uc.name, first.isoformat())
    return spec.model_copy(update={"origin": first.isoformat()})


@dataclass(frozen=True)
class Monitored:
    """Which columns the monitor watches: profile features that are event fields."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    missing: tuple[str, ...]

    @classmethod
    def of(cls, profile: Mapping[str, Any], spec: DriftSpec, uc: UseCaseConfig) -> Monitored:
        fields = {f.name for f in uc.schema_}
        wanted = set(spec.features) if spec.features is not None else fields
        if spec.features is not None:
            unknown = sorted(set(spec.features) - fields)
            if unknown:
                raise ConfigError(f"drift.features: {unknown} are not fields of use case {uc.name}")
        numeric = tuple(c for c in profile.get("numeric", {}) if c in fields and c in wanted)
        categorical = tuple(c for c in profile.get("categorical", {}) if c in fields and c in wanted)
        missing = tuple(f.name for f in uc.schema_ if f.name not in (uc.event_id, uc.event_time))
        return cls(numeric, categorical, missing)


# --------------------------------------------------------------------------- counting (Spark)


# Event times outside these bounds (a millisecond epoch read as seconds lands in the year 55,000)
# put a record in no window, like a time that cannot be read: they would otherwise open windows
# no one closes, push the watermark past every real window, and cannot be collected to Python.
EARLIEST_TIME, LATEST_TIME = dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)


def _in_time_range(time: Column) -> Column:
    return time.isNotNull() & (time >= F.lit(EARLIEST_TIME)) & (time < F.lit(LATEST_TIME))


def _item(kind: str, feature: str, bucket: Column, value: Column | None = None) -> Column:
    return F.struct(
        F.lit(kind).alias("kind"), F.lit(feature).alias("feature"), bucket.cast("string").alias("bucket"),
        (value if value is not None else F.lit(None)).cast("double").alias("value"),
    )


def _when(cond: Column, item: Column) -> Column:
    return F.when(cond, item)


def aggregate_counts(df: DataFrame, time_col: str, items: Sequence[Column], window_s: int,
                     offset_us: int = 0) -> DataFrame:
    """Explode each row into its ``(kind, feature, bucket, value)`` items (nulls skipped) and count
    them per tumbling event-time window (starting ``offset_us`` after the epoch's grid, see
    :func:`window_offset_us`): the :data:`COUNT_SCHEMA` frame.

    Example::

        aggregate_counts(df, "event_time", [_item("input", "volume", F.lit(""))], 60)
    """
    window = _window(F.col(time_col), window_s, offset_us)
    timed = df.where(_in_time_range(F.col(time_col)))
    exploded = timed.select(
        window.alias("w"),
        F.col(time_col).cast("timestamp").alias("t"),
        F.explode(F.filter(F.array(*items), lambda x: x.isNotNull())).alias("item"),
    )
    return (
        exploded.groupBy(
            F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
            F.col("item.kind").alias("kind"), F.col("item.feature").alias("feature"),
            F.col("item.bucket").alias("bucket"),
        )
        .agg(
            F.count(F.lit(1)).alias("n"), F.sum("item.value").alias("total"),
            F.min("item.value").alias("low"), F.max("item.value").alias("high"),
            F.max(F.col("t")).alias("newest"),
        )
        .select(*COUNT_SCHEMA.fieldNames())
    )


def fixed_counts(
    df: DataFrame, time_col: str, cells: Sequence[tuple[str, str, str, Column]], window_s: int, offset_us: int = 0
) -> DataFrame:
    """Counts of known cells ``(kind, feature, bucket, condition)`` per tumbling window (as in
    :func:`aggregate_counts`) in one wide aggregation (a ``count_if`` per cell, no row is
    exploded), as a :data:`COUNT_SCHEMA` frame without empty cells.

    Example::

        fixed_counts(df, "event_time", [("input", "volume", "", F.lit(True))], 60)
    """
    if not cells:
        raise UsageError("cells: expected at least one (kind, feature, bucket, condition)")
    timed = df.where(_in_time_range(F.col(time_col)))
    wide = timed.groupBy(_window(F.col(time_col), window_s, offset_us).alias("w")).agg(
        F.max(F.col(time_col).cast("timestamp")).alias("newest"),
        *[F.count_if(cond).alias(f"_c{i}") for i, (_, _, _, cond) in enumerate(cells)],
    )
    cell = F.explode(F.array(*[
        F.struct(F.lit(kind).alias("kind"), F.lit(feature).alias("feature"), F.lit(bucket).alias("bucket"),
                 F.col(f"_c{i}").cast("long").alias("n"))
        for i, (kind, feature, bucket, _) in enumerate(cells)
    ])).alias("cell")
    return (
        wide.select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "newest", cell)
        .where(F.col("cell.n") > 0)
        .select("window_start", "window_end", F.col("cell.kind").alias("kind"), F.col("cell.feature").alias("feature"),
                F.col("cell.bucket").alias("bucket"), F.col("cell.n").alias("n"),
                *[F.lit(None).cast("double").alias(c) for c in ("total", "low", "high")], "newest")
    )


def event_counts(
    events: DataFrame, profile: Mapping[str, Any], spec: DriftSpec, uc: UseCaseConfig,
    quarantined_col: str | None = "quarantined",
) -> DataFrame:
    """Per-window counts of typed events (one column per schema field, plus a boolean
    ``quarantined`` column, if any): ``input`` volume and quarantined records,
    ``missing`` values per field, and — over records that passed validation —
    ``numeric`` bins and ``categorical`` values of the monitored features.

    Everything known in advance (volume, missing values, the profile's bins and
    categories) is counted in one wide aggregation (:func:`fixed_counts`); only
    values the reference never saw are exploded and counted by value.

    Example::

        event_counts(silver_like_df.withColumn("quarantined", F.lit(False)), profile, spec, uc)
    """
    cols = Monitored.of(profile, spec, uc)
    good = ~F.col("_quarantined")
    pre = events.select(
        F.col(uc.event_time),
        (F.col(quarantined_col) if quarantined_col else F.lit(False)).alias("_quarantined"),
        *[F.col(c) for c in dict.fromkeys([*cols.missing, *cols.numeric, *cols.categorical]) if c != uc.event_time],
        *[bin_index(F.col(c), profile["numeric"][c]["edges"]).alias(f"_bin{i}") for i, c in enumerate(cols.numeric)],
    )
    cells: list[tuple[str, str, str, Column]] = [("input", "volume", "", F.lit(True))]
    if quarantined_col:
        cells.append(("input", "quarantined", "", F.col("_quarantined")))
    for c in cols.missing:
        null = F.col(c).isNull()
        if uc.field(c).type == "double":
            null = null | F.isnan(F.col(c))
        cells.append(("missing", c, "", null))
    for i, c in enumerate(cols.numeric):
        cells += [("numeric", c, str(k), good & (F.col(f"_bin{i}") == F.lit(k)))
                  for k in range(len(profile["numeric"][c]["edges"]) + 1)]
    unseen: list[Column] = []
    for c in cols.categorical:
        levels = [str(v) for v in profile["categorical"][c]["counts"]]
        v = F.col(c).cast("string")
        cells += [("categorical", c, level, good & (v == F.lit(level))) for level in levels]
        unseen.append(_when(good & v.isNotNull() & ~v.isin(*levels), _item("categorical", c, v)))
    known = fixed_counts(pre, uc.event_time, cells, spec.window_s, window_offset_us(spec))
    if not unseen:
        return known
    return known.unionByName(aggregate_counts(pre, uc.event_time, unseen, spec.window_s, window_offset_us(spec)))


def classified_events(classified: DataFrame, uc: UseCaseConfig) -> DataFrame:
    """Typed event columns plus ``quarantined`` from :func:`driftline.quality.classify` output."""
    return classified.select(
        *[F.col("parsed")[f.name].alias(f.name) for f in uc.schema_],
        F.col("reason").isNotNull().alias("quarantined"),
    )


def prediction_counts(
    predictions: DataFrame, profile: Mapping[str, Any], spec: DriftSpec, uc: UseCaseConfig
) -> DataFrame:
    """Per-window counts of served predictions (``predictions/<uc>`` columns): score bins
    of the reference prediction profile (with min/max), volume, null or NaN predictions, positives.

    Example::

        prediction_counts(read_delta(spark, path), profile, spec, uc)
    """
    score, pred = F.col("score").cast("double"), F.col("prediction").cast("double")
    bad = score.isNull() | F.isnan(score) | pred.isNull() | F.isnan(pred)
    items: list[Column] = [
        _item("output", "volume", F.lit("")),
        _when(bad, _item("output", "null_prediction", F.lit(""))),
    ]
    if uc.label.kind == "binary":
        items.append(_when(~bad & (pred == F.lit(1.0)), _item("output", "positive", F.lit(""))))
    ref = profile.get("prediction")
    if ref is not None:
        b = bin_index(score, ref["edges"])
        items.append(_when(b.isNotNull(), _item("prediction", "score", b, score)))
    served = predictions.where(F.col("served"))
    return aggregate_counts(served, "event_time", items, spec.window_s, window_offset_us(spec))


def performance_counts(joined: DataFrame, spec: DriftSpec, uc: UseCaseConfig) -> DataFrame:
    """Per-window counts of predictions joined with their labels (columns ``event_time``,
    ``score``, ``prediction``, ``label``): confusion cells and positives/negatives per
    fine score bin (binary), or squared and absolute errors (regression).

    Example::

        performance_counts(preds.join(labels, "event_id", "inner"), spec, uc)
    """
    score, pred, label = (F.col(c).cast("double") for c in ("score", "prediction", "label"))
    ok = score.isNotNull() & ~F.isnan(score) & label.isNotNull()
    items: list[Column] = [_when(ok, _item("perf", "labels", F.lit("")))]
    if uc.label.kind == "binary":
        positive, predicted = label == F.lit(1.0), pred == F.lit(1.0)
        cell = (
            F.when(positive & predicted, F.lit("tp")).when(~positive & predicted, F.lit("fp"))
            .when(positive & ~predicted, F.lit("fn")).otherwise(F.lit("tn"))
        )
        bins = spec.performance.score_bins
        sbin = F.least(F.greatest(F.floor(score * F.lit(bins)), F.lit(0)), F.lit(bins - 1)).cast("long")
        items += [
            _when(ok, _item("perf", "confusion", cell)),
            _when(ok, _item("perf", "score", F.concat(label.cast("int").cast("string"), F.lit(":"),
                                                      sbin.cast("string")))),
        ]
    else:
        err = score - label
        items += [
            _when(ok, _item("perf", "squared_error", F.lit(""), err * err)),
            _when(ok, _item("perf", "abs_error", F.lit(""), F.abs(err))),
        ]
    return aggregate_counts(joined, "event_time", items, spec.window_s, window_offset_us(spec))


# --------------------------------------------------------------------------- statistics (driver, small)


def sum_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Partial counts summed per key (n and total added, low/high min/max)."""
    if counts.empty:
        return counts
    return counts.groupby(list(COUNT_KEYS), as_index=False, dropna=False).agg(
        n=("n", "sum"), total=("total", "sum"), low=("low", "min"), high=("high", "max"), newest=("newest", "max"))


def _drift_rows(
    ws: Any, we: Any, counts: pd.DataFrame, profile: Mapping[str, Any], spec: DriftSpec, cols: Monitored,
    kinds: Sequence[str], computed_at: dt.datetime,
) -> list[dict[str, Any]]:
    """Drift rows of one window: per feature psi/js/(wasserstein)/chi2/(unseen_share), BH across features."""
    features: list[tuple[str, str, dict[str, float], int, int]] = []
    for kind in kinds:
        names: Sequence[str]
        if kind == "numeric":
            names = cols.numeric
        elif kind == "categorical":
            names = cols.categorical
        else:
            names = ["score"] if profile.get("prediction") is not None else []
        for name in names:
            sub = counts[(counts["kind"] == kind) & (counts["feature"] == name)]
            values, n_ref = drift.profile_statistics(profile, kind, name, list(sub["bucket"]), list(sub["n"]))
            features.append((kind, name, values, n_ref, int(sub["n"].sum())))
    adjusted = drift.benjamini_hochberg([v["p_value"] for _, _, v, _, _ in features])
    rows: list[dict[str, Any]] = []
    for (kind, name, values, n_ref, n_cur), p_adj in zip(features, adjusted, strict=True):
        thr = getattr(spec, "prediction" if kind == "prediction" else kind)
        enough = n_cur >= spec.min_samples
        p = values["p_value"]
        significant = enough and not math.isnan(p_adj) and p_adj <= spec.alpha

        base = {"window_start": ws, "window_end": we, "feature": name, "kind": kind, "n_reference": n_ref,
                "n_current": n_cur, "computed_at": computed_at}
        tested = {"p_value": None if math.isnan(p) else float(p),
                  "p_adjusted": None if math.isnan(p_adj) else float(p_adj)}
        out = []
        for stat in ["psi", "js"] + (["wasserstein"] if kind != "categorical" else []):
            limit = threshold_for(profile, spec, kind, name, stat)  # calibrated or fixed
            out.append({**base, **tested, "statistic": stat, "value": float(values[stat]), "threshold": limit,
                        "drifted": bool(significant and values[stat] >= limit)})
        # chi-square carries the test: its threshold is alpha, and it is drifted with the feature
        out.append({**base, **tested, "statistic": "chi2", "value": float(values["chi2"]), "threshold": spec.alpha,
                    "drifted": any(r["drifted"] for r in out)})
        if kind == "categorical":
            share = values["unseen_share"]
            out.append({**base, "p_value": None, "p_adjusted": None, "statistic": "unseen_share", "value": share,
                        "threshold": thr.unseen_share, "drifted": bool(enough and share >= thr.unseen_share)})
        rows += out
    return rows


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _quality_row(ws: Any, we: Any, metric: str, column: str | None, value: float, threshold: float | None,
                 breached: bool, computed_at: dt.datetime) -> dict[str, Any]:
    return {"window_start": ws, "window_end": we, "metric": metric, "column": column, "value": float(value),
            "threshold": threshold, "breached": bool(breached), "computed_at": computed_at}


def _cell(counts: pd.DataFrame, kind: str, feature: str, bucket: str = "", col: str = "n") -> float:
    sub = counts[(counts["kind"] == kind) & (counts["feature"] == feature) & (counts["bucket"] == bucket)]
    return float(sub[col].sum()) if len(sub) else 0.0


def _input_quality(ws: Any, we: Any, counts: pd.DataFrame, profile: Mapping[str, Any], spec: DriftSpec,
                   cols: Monitored, computed_at: dt.datetime) -> list[dict[str, Any]]:
    q = spec.quality
    volume = _cell(counts, "input", "volume")
    enough = volume >= spec.min_samples
    rows = [_quality_row(ws, we, "volume", "events", volume, None, False, computed_at)]
    rate = _rate(_cell(counts, "input", "quarantined"), volume)
    rows.append(_quality_row(ws, we, "quarantine_rate", None, rate, q.max_quarantine_rate,
                             enough and rate > q.max_quarantine_rate, computed_at))
    ref_rows = float(profile.get("rows") or 0)
    for c in cols.missing:
        ref_prof = profile.get("numeric", {}).get(c) or profile.get("categorical", {}).get(c) or {}
        ref_rate = float(ref_prof.get("null_count", 0)) / ref_rows if ref_rows > 0 else 0.0
        limit = q.max_missing_rate.get(c, min(1.0, ref_rate + q.missing_margin))
        rate = _rate(_cell(counts, "missing", c), volume)
        rows.append(_quality_row(ws, we, "missing_rate", c, rate, limit, enough and rate > limit, computed_at))
    return rows


def _output_quality(ws: Any, we: Any, counts: pd.DataFrame, spec: DriftSpec, uc: UseCaseConfig,
                    computed_at: dt.datetime) -> list[dict[str, Any]]:
    q = spec.quality
    volume = _cell(counts, "output", "volume")
    enough = volume >= spec.min_samples
    rows = [_quality_row(ws, we, "volume", "predictions", volume, None, False, computed_at)]
    rate = _rate(_cell(counts, "output", "null_prediction"), volume)
    rows.append(_quality_row(ws, we, "null_prediction_rate", "score", rate, q.max_null_prediction_rate,
                             volume > 0 and rate > q.max_null_prediction_rate, computed_at))
    scores = counts[(counts["kind"] == "prediction") & (counts["feature"] == "score")]
    binary = uc.label.kind == "binary"
    if len(scores):
        low, high = float(scores["low"].min()), float(scores["high"].max())
        rows.append(_quality_row(ws, we, "score_min", "score", low, 0.0 if binary else None,
                                 binary and low < 0.0, computed_at))
        rows.append(_quality_row(ws, we, "score_max", "score", high, 1.0 if binary else None,
                                 binary and high > 1.0, computed_at))
    if binary:
        rate = _rate(_cell(counts, "output", "positive"), volume)
        limit = q.max_positive_rate
        rows.append(_quality_row(ws, we, "positive_rate", "prediction", rate, limit,
                                 limit is not None and enough and rate > limit, computed_at))
    return rows


def _performance_rows(ws: Any, we: Any, counts: pd.DataFrame, spec: DriftSpec, uc: UseCaseConfig,
                      computed_at: dt.datetime) -> list[dict[str, Any]]:
    p = spec.performance
    n = _cell(counts, "perf", "labels")
    values: dict[str, float] = {}
    positives = 0.0
    if uc.label.kind == "binary":
        tp, fp, fn = (_cell(counts, "perf", "confusion", c) for c in ("tp", "fp", "fn"))
        positives = tp + fn
        scores = counts[(counts["kind"] == "perf") & (counts["feature"] == "score")]
        pos, neg = np.zeros(p.score_bins), np.zeros(p.score_bins)
        for bucket, cnt in zip(scores["bucket"], scores["n"], strict=True):
            label, sbin = str(bucket).split(":")
            (pos if label == "1" else neg)[int(sbin)] += float(cnt)
        values["roc_auc"] = drift.roc_auc_from_counts(pos, neg)
        values.update(drift.confusion_metrics(tp, fp, fn))
    else:
        se, ae = _cell(counts, "perf", "squared_error", col="total"), _cell(counts, "perf", "abs_error", col="total")
        values["rmse"] = math.sqrt(se / n) if n > 0 else float("nan")
        values["mae"] = ae / n if n > 0 else float("nan")
    enough = n >= p.min_labels and (uc.label.kind != "binary" or positives >= p.min_positives)
    rows = []
    for metric, value in values.items():
        bound = p.thresholds.get(metric, Bound())
        below = bound.min is not None and value < bound.min
        above = bound.max is not None and value > bound.max
        threshold = bound.min if bound.min is not None else bound.max
        rows.append({"window_start": ws, "window_end": we, "metric": metric, "value": float(value), "n": int(n),
                     "threshold": threshold, "breached": bool(enough and not math.isnan(value) and (below or above)),
                     "computed_at": computed_at})
    return rows


def window_tables(
    counts: pd.DataFrame, profile: Mapping[str, Any], spec: DriftSpec, uc: UseCaseConfig, computed_at: dt.datetime,
) -> dict[str, list[dict[str, Any]]]:
    """The output rows of every window in ``counts`` (a collected :data:`COUNT_SCHEMA`
    frame, partial counts allowed): ``{'drift': [...], 'quality': [...], 'performance': [...]}``.

    Example::

        tables = window_tables(event_counts(df, profile, spec, uc).toPandas(), profile, spec, uc, now)
        [r for r in tables["drift"] if r["drifted"]]
    """
    out: dict[str, list[dict[str, Any]]] = {"drift": [], "quality": [], "performance": []}
    if counts.empty:
        return out
    cols = Monitored.of(profile, spec, uc)
    summed = sum_counts(counts)
    for (ws, we), window in summed.groupby(["window_start", "window_end"], sort=True):
        kinds = set(window["kind"])
        ws_py, we_py = pd.Timestamp(ws).to_pydatetime(), pd.Timestamp(we).to_pydatetime()
        if "input" in kinds:
            out["drift"] += _drift_rows(ws_py, we_py, window, profile, spec, cols, ["numeric", "categorical"],
                                        computed_at)
            out["quality"] += _input_quality(ws_py, we_py, window, profile, spec, cols, computed_at)
        if "output" in kinds:
            out["drift"] += _drift_rows(ws_py, we_py, window, profile, spec, cols, ["prediction"], computed_at)
            out["quality"] += _output_quality(ws_py, we_py, window, spec, uc, computed_at)
        if "perf" in kinds:
            out["performance"] += _performance_rows(ws_py, we_py, window, spec, uc, computed_at)
    return out


# --------------------------------------------------------------------------- Delta tables


def output_paths(platform: PlatformConfig, uc: UseCaseConfig) -> dict[str, str]:
    """``{'drift': .../monitoring/<uc>_drift, 'quality': ..., 'performance': ...}``."""
    return {name: catalog.path(platform, name, uc) for name in OUTPUT_SCHEMAS}


def state_path(platform: PlatformConfig, uc: UseCaseConfig, source: str) -> str:
    """The partial-count table of one source (internal, bounded by the lateness)."""
    return catalog.path(platform, f"monitor_state_{source}", uc)


def merge_rows(spark: SparkSession, rows: Sequence[Mapping[str, Any]], path: str, schema: T.StructType,
               keys: Sequence[str]) -> int:
    """MERGE ``rows`` into the table at ``path`` on ``keys`` (null-safe): a replayed window
    replaces its rows instead of adding copies. The first write creates the table; a
    concurrent creator makes it fail and retry as a MERGE; the events and predictions queries
    both MERGE into the drift and quality tables, so conflicts are retried
    (:func:`driftline.delta.merge_with_retry`). Returns the number of rows merged.

    Example::

        merge_rows(spark, tables["drift"], paths["drift"], DRIFT_SCHEMA, OUTPUT_KEYS["drift"])
    """
    if not rows:
        return 0
    df = spark.createDataFrame([tuple(r[c] for c in schema.fieldNames()) for r in rows], schema)
    merge_with_retry(spark, df, path, keys)
    return len(rows)


def write_tables(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig,
                 tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """MERGE the output rows of :func:`window_tables` into the monitoring tables. (Side by side
    in threads they took as long on 2 cores: each MERGE is mostly driver work.)"""
    paths = output_paths(platform, uc)
    return {name: merge_rows(spark, rows, paths[name], OUTPUT_SCHEMAS[name], OUTPUT_KEYS[name])
            for name, rows in tables.items()}


CLOSED = "closed"  # kind of the state row that records how far windows are final (WindowEmitter.flush)
# the cell of each source that counts its rows (how many late rows were dropped)
VOLUME_CELLS = {("input", "volume"), ("output", "volume"), ("perf", "labels")}
# kind of the state rows counting the rows of a final window dropped as late (feature: what they are);
# kept with the CLOSED row, summed into the window's ``late_events`` row of monitoring/<uc>_quality
LATE = "late"
LATE_COLUMN = {"input": "events", "output": "predictions", "perf": "labels"}


@dataclass
class WindowEmitter:
    """Turns the partial counts of each micro-batch into finished windows.

    ``process(counts, batch_id)``: drop rows of windows that are final (their end at or before
    the watermark), append the rest to the state table (``txnAppId`` = ``app_id``,
    ``txnVersion`` = batch id, so a replayed batch adds nothing), then emit every window whose
    end the watermark has passed and delete its state. The rows dropped as late are counted in
    the same append (kind :data:`LATE`, per window) and their total per window is MERGEd into
    ``monitoring/<uc>_quality`` as metric ``late_events`` (column ``events``, ``predictions``
    or ``labels``): nothing is dropped without a count a user can read. Once MERGEd, the late
    rows are deleted with the next closed windows' state, so the table levels off: when more
    rows of a window arrive late after that, the append carries the window's count so far
    (read from the quality table, batch id -1) beside them, and the MERGE writes the sum; a
    replayed batch appends nothing and so MERGEs the same sum, or nothing once deleted.
    The watermark is the newest event time
    seen minus ``drift.lateness``, or the end of the last window :meth:`flush` made final if
    that is later. Which windows are held, the newest event time and that end are read from
    the state table once, then followed in memory.
    """

    spark: SparkSession
    platform: PlatformConfig
    uc: UseCaseConfig
    profile: Mapping[str, Any]
    spec: DriftSpec
    source: str
    app_id: str
    alerts: AlertEvaluator | None = None  # evaluates the alert rule after windows are written
    _ends: set[dt.datetime] = field(default_factory=set, init=False)
    _newest: dt.datetime | None = field(default=None, init=False)
    _final_until: dt.datetime | None = field(default=None, init=False)
    _loaded: bool = field(default=False, init=False)

    @property
    def path(self) -> str:
        return state_path(self.platform, self.uc, self.source)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not is_delta_table(self.spark, self.path):
            return
        held = (read_delta(self.spark, self.path).where(F.col("kind") != F.lit(LATE))
                .groupBy((F.col("kind") == F.lit(CLOSED)).alias("closed"), "window_end")
                .agg(F.max("newest").alias("newest")).collect())
        self._ends = {r["window_end"] for r in held if not r["closed"]}
        self._final_until = max((r["window_end"] for r in held if r["closed"]), default=None)
        self._newest = max((r["newest"] for r in held if r["newest"] is not None), default=None)

    def watermark(self) -> dt.datetime | None:
        """The later of the newest event time seen minus the lateness and the end of the last
        flushed window (None before any event)."""
        self._load()
        lagging = None if self._newest is None else self._newest - dt.timedelta(seconds=self.spec.lateness_s)
        return max((m for m in (lagging, self._final_until) if m is not None), default=None)

    def _emit(self, upto: dt.datetime | None) -> dict[str, int]:
        """Sum the held counts of the windows ending at or before ``upto`` (all when None) and
        MERGE their output rows."""
        held = read_delta(self.spark, self.path).where(~F.col("kind").isin(CLOSED, LATE))
        if upto is not None:
            held = held.where(F.col("window_end") <= F.lit(upto))
        summed = cast(pd.DataFrame, held.groupBy(*COUNT_KEYS).agg(
            F.sum("n").alias("n"), F.sum("total").alias("total"), F.min("low").alias("low"),
            F.max("high").alias("high"), F.max("newest").alias("newest"),
        ).toPandas())
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return write_tables(self.spark, self.platform, self.uc,
                            window_tables(summed, self.profile, self.spec, self.uc, now))

    def process(self, counts: DataFrame, batch_id: int) -> dict[str, int]:
        """Add one micro-batch's partial counts; emit and forget the windows that closed. Logs
        one line per batch with the time of each step (counts, append, late, emit, forget, alerts)."""
        started, timings = time.monotonic(), {}

        def lap(step: str, since: float) -> float:
            now = time.monotonic()
            timings[step] = now - since
            return now

        before = self.watermark()
        rows = counts.select(*COUNT_SCHEMA.fieldNames()).collect()  # the batch's small count table
        t = lap("counts", started)
        fresh = [r for r in rows if before is None or r["window_end"] > before]
        dropped = [(r["window_start"], r["window_end"], LATE, LATE_COLUMN[r["kind"]], "", int(r["n"]), None, None,
                    None, None, batch_id)
                   for r in rows if before is not None and r["window_end"] <= before
                   and (r["kind"], r["feature"]) in VOLUME_CELLS]
        late = sum(d[5] for d in dropped)
        if dropped:
            dropped = [*self._late_so_far(dropped), *dropped]
        if late:
            log.warning("monitor %s batch %d: %d rows of windows already emitted (ending at or before %s) "
                        "dropped as late, counted in %s (late_events)", self.source, batch_id, late, before,
                        output_paths(self.platform, self.uc)["quality"])
        if fresh or dropped:
            # one append with the batch's transaction id: a replay neither adds counts nor counts late rows again
            write_delta(self.spark.createDataFrame([*[(*r, batch_id) for r in fresh], *dropped], STATE_SCHEMA),
                        self.path, mode="append", txn=(self.app_id, batch_id))
            t = lap("append", t)
        if dropped:
            self._write_late({d[1] for d in dropped})
            t = lap("late", t)
        if fresh:
            self._ends |= {r["window_end"] for r in fresh}
            newest = max((r["newest"] for r in fresh if r["newest"] is not None), default=None)
            if newest is not None and (self._newest is None or newest > self._newest):
                self._newest = newest
        wm = self.watermark()
        closing = {e for e in self._ends if wm is not None and e <= wm}
        written: dict[str, int] = {}
        if wm is not None and closing:
            written = self._emit(wm)
            t = lap("emit", t)
            # forget the closed windows and the late counts (MERGEd already); the row saying how far
            # windows are final stays
            delete_rows(self.spark, self.path,
                        ((F.col("window_end") <= F.lit(wm)) & (F.col("kind") != F.lit(CLOSED)))
                        | (F.col("kind") == F.lit(LATE)))
            self._ends -= closing
            t = lap("forget", t)
            self._evaluate_alerts(closing, written)
            lap("alerts", t)
        log.info("monitor %s batch %d: %d count rows, %d windows emitted%s in %.1fs (%s)", self.source, batch_id,
                 len(rows), len(closing), f" up to {wm} {written}" if closing else "", time.monotonic() - started,
                 ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        return written

    def _late_so_far(self, dropped: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """One state row (batch id -1) per window and column of ``dropped`` with the late count
        the quality table holds for it, where the state holds none (deleted after its MERGE)."""
        ends = sorted({d[1] for d in dropped})
        held = set() if not is_delta_table(self.spark, self.path) else {
            (r["window_end"], r["feature"]) for r in read_delta(self.spark, self.path)
            .where((F.col("kind") == F.lit(LATE)) & F.col("window_end").isin(*ends))
            .select("window_end", "feature").distinct().collect()}
        wanted = {(d[1], d[3]) for d in dropped} - held
        path = output_paths(self.platform, self.uc)["quality"]
        if not wanted or not is_delta_table(self.spark, path):
            return []
        so_far = (read_delta(self.spark, path)
                  .where((F.col("metric") == F.lit("late_events")) & F.col("window_end").isin(*ends))
                  .select("window_start", "window_end", "column", "value").collect())
        return [(r["window_start"], r["window_end"], LATE, r["column"], "", int(r["value"]), None, None, None, None,
                 -1) for r in so_far if (r["window_end"], r["column"]) in wanted and r["value"]]

    def _write_late(self, ends: Iterable[dt.datetime]) -> int:
        """MERGE the ``late_events`` quality rows of the windows ending at ``ends``: the rows
        dropped as late so far, summed from the state table (so a replay writes the same)."""
        late = (read_delta(self.spark, self.path)
                .where((F.col("kind") == F.lit(LATE)) & F.col("window_end").isin(*sorted(ends)))
                .groupBy("window_start", "window_end", "feature").agg(F.sum("n").alias("n")).collect())
        if not late:
            return 0
        path = output_paths(self.platform, self.uc)["quality"]
        # the row joins its window's computation (computed_at of the rows already there): readers
        # that keep a window's latest computation (the alert rule) still see all of its rows
        stamps = {} if not is_delta_table(self.spark, path) else {
            r["window_start"]: r["t"] for r in read_delta(self.spark, path)
            .where(F.col("window_start").isin(*sorted({r["window_start"] for r in late})))
            .groupBy("window_start").agg(F.max("computed_at").alias("t")).collect()}
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = [_quality_row(r["window_start"], r["window_end"], "late_events", r["feature"], float(r["n"]), None,
                             False, stamps.get(r["window_start"]) or now) for r in late]
        return merge_rows(self.spark, rows, path, QUALITY_SCHEMA, OUTPUT_KEYS["quality"])

    def _evaluate_alerts(self, ends: Iterable[dt.datetime], written: Mapping[str, int]) -> None:
        """The alert rule over the windows just written (see :class:`driftline.alerts.AlertEvaluator`)."""
        if self.alerts is not None:
            # collected timestamps are naive local times (pyspark); astimezone reads them so
            self.alerts.windows_closed([e.astimezone(dt.UTC) for e in ends], written)

    def flush(self) -> dict[str, int]:
        """Emit every window still held and make it final: for the end of a run that stops by
        itself (``availableNow``), when event time will not pass its last windows.

        The output rows are MERGEd first; then one commit replaces the state table with a
        single ``closed`` row (``window_end`` = the end of the last window emitted, ``newest`` =
        the newest event time seen), so later rows of those windows are dropped as late (the
        late counts were MERGEd by :meth:`process`). A
        flush that stops between the two is repeated by the next one with the same counts;
        with no window held it writes nothing.

        Example::

            emitter.flush()   # {'drift': 77, 'quality': 9, 'performance': 0}
        """
        self._load()
        if not self._ends:
            return {}
        written = self._emit(None)
        final_until, ends = max(self._ends), set(self._ends)
        marker = (final_until, final_until, CLOSED, "", "", 0, None, None, None, self._newest, -1)
        write_delta(self.spark.createDataFrame([marker], STATE_SCHEMA), self.path, mode="overwrite")
        self._ends, self._final_until = set(), final_until
        log.info("monitor %s: run finished, windows up to %s emitted and final: %s", self.source, final_until,
                 written)
        self._evaluate_alerts(ends, written)
        return written


# --------------------------------------------------------------------------- streaming


def parse_labels(raw: DataFrame, uc: UseCaseConfig) -> DataFrame:
    """Label records (Kafka ``value`` JSON) as ``event_id``, ``label`` (double; a binary
    label accepts true/false/1/0) and ``label_time``; records missing any of them are dropped."""
    from driftline.quality import json_options, label_dataset

    ds = label_dataset(uc)
    schema = T.StructType([
        T.StructField(uc.event_id, T.StringType()), T.StructField(uc.label.field, T.StringType()),
        T.StructField(ds.time_field, T.TimestampType()),
    ])
    parsed = F.from_json(F.col("value").cast("string"), schema, json_options(ds.json))
    text = F.lower(F.trim(parsed[uc.label.field]))
    label = (
        F.when(text.isin("true", "1", "1.0"), F.lit(1.0)).when(text.isin("false", "0", "0.0"), F.lit(0.0))
        if uc.label.kind == "binary" else text.cast("double")
    )
    return (
        raw.select(parsed[uc.event_id].alias("label_event_id"), label.alias("label"),
                   parsed[ds.time_field].alias("label_time"))
        .where(F.col("label_event_id").isNotNull() & F.col("label").isNotNull() & F.col("label_time").isNotNull())
    )


def join_labels(predictions: DataFrame, labels: DataFrame, spec: DriftSpec) -> DataFrame:
    """Served predictions joined with their labels by event id: a label counts when it
    arrives within ``drift.performance.max_label_delay`` of the event (both sides watermarked
    by ``drift.lateness`` when streaming). Columns ``event_time, score, prediction, label``."""
    p = predictions.where(F.col("served")).select("event_id", "event_time", "score", "prediction")
    cond = (
        (F.col("event_id") == F.col("label_event_id"))
        & (F.col("label_time") >= F.col("event_time"))
        & (F.col("label_time") <= F.col("event_time") + F.expr(f"INTERVAL {spec.label_delay_s} SECONDS"))
    )
    if p.isStreaming:
        delay = f"{spec.lateness_s} seconds"
        p = p.withWatermark("event_time", delay)
        labels = labels.withWatermark("label_time", delay)
    return p.join(labels, cond, how="inner").select("event_time", "score", "prediction", "label")


def _foreach(emitter: WindowEmitter, to_counts: Callable[[DataFrame], DataFrame]
             ) -> Callable[[DataFrame, int], None]:
    def handle(batch: DataFrame, batch_id: int) -> None:
        batch.persist()  # the counts read it twice (known cells, unseen values)
        try:
            emitter.process(to_counts(batch), batch_id)
        finally:
            batch.unpersist()

    return handle


def start_monitor(
    spark: SparkSession,
    platform: PlatformConfig,
    uc: UseCaseConfig,
    profile: Mapping[str, Any],
    *,
    spec: DriftSpec | None = None,
    trigger: str = "availableNow",
    sources: Sequence[str] = SOURCES,
    starting_offsets: str = "earliest",
    alias: str = "champion",
    alerts: bool = True,
) -> MonitorQueries:
    """Start one streaming query per source and return them (with their window emitters).

    With ``alerts`` (default) the sources share one :class:`~driftline.alerts.AlertEvaluator`:
    each time a source writes closed windows to a table the rule reads
    (``drift.alert.sources``), the N-of-M rule is evaluated (serialized by its lock) and
    new alerts are published to ``<uc>.alerts`` and recorded, once each.

    ``events``: ``<uc>.events`` (Kafka) → validation as in jobs/validate → feature
    drift, volume, missing and quarantine rates. ``predictions``: the
    ``predictions/<uc>`` Delta table → prediction drift and output metrics over
    served rows. ``performance``: predictions joined with ``<uc>.labels`` →
    ROC AUC/precision/recall or RMSE/MAE. Each has its checkpoint under
    ``monitor/<uc>/<source>``. ``drift.origin: training_start`` is the first training event
    time of the model behind ``alias`` (:func:`resolve_origin`).

    Example::

        await_all(start_monitor(spark, platform, uc, load_reference_profile(platform, uc)))
    """
    from driftline.config import trigger_options
    from driftline.kafka.spark import raw_records, read_kafka_stream
    from driftline.quality import classify, event_dataset

    run_to_end = trigger in RUNS_TO_END
    options = trigger_options(trigger)
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise UsageError(f"sources: expected some of {list(SOURCES)}, got {list(sources)}")
    predictions_path = catalog.path(platform, "predictions", uc)
    needs_predictions = {"predictions", "performance"} & set(sources)
    if needs_predictions and not is_delta_table(spark, predictions_path):
        raise MonitorError(f"{sorted(needs_predictions)} need the Delta table {predictions_path}; start "
                           "streaming/score.py first or pass --sources events")
    spec = resolve_origin(spark, platform, uc, spec or drift_spec(uc), alias)
    dataset = event_dataset(uc)

    evaluator = None
    if alerts:
        evaluator = AlertEvaluator(uc.name, uc.drift.alert,
                                   lambda since: evaluate_alerts(spark, platform, uc, since=since,
                                                                 reference_version=profile.get("model_version")))

    def emitter(source: str) -> WindowEmitter:
        return WindowEmitter(spark, platform, uc, profile, spec, source, f"monitor:{uc.name}:{source}", evaluator)

    frames: dict[str, tuple[DataFrame, Callable[[DataFrame], DataFrame]]] = {}
    if "events" in sources:
        raw = raw_records(read_kafka_stream(spark, platform.kafka, uc.topic("events"), starting_offsets))
        frames["events"] = (raw, lambda b: event_counts(classified_events(classify(b, dataset), uc),
                                                        profile, spec, uc))
    if "predictions" in sources:
        preds = spark.readStream.format("delta").load(predictions_path)
        frames["predictions"] = (preds, lambda b: prediction_counts(b, profile, spec, uc))
    if "performance" in sources:
        preds = spark.readStream.format("delta").load(predictions_path)
        labels = parse_labels(read_kafka_stream(spark, platform.kafka, uc.topic("labels"), starting_offsets), uc)
        frames["performance"] = (join_labels(preds, labels, spec), lambda b: performance_counts(b, spec, uc))
    queries, emitters = [], {source: emitter(source) for source in frames}
    for source, (frame, to_counts) in frames.items():
        writer = (
            frame.writeStream.queryName(f"monitor-{uc.name}-{source}")
            .option("checkpointLocation", catalog.checkpoint(platform, "monitor", uc, source=source))
            .foreachBatch(_foreach(emitters[source], to_counts))
            .trigger(**options)  # type: ignore[call-overload]
        )
        queries.append(writer.start())
    return MonitorQueries(tuple(queries), emitters, run_to_end, evaluator)


RUNS_TO_END = ("availableNow", "once")  # triggers that stop by themselves once the input is read


@dataclass(frozen=True)
class MonitorQueries:
    """What :func:`start_monitor` started: one query per source (iterating gives them), each
    source's :class:`WindowEmitter`, and whether the trigger stops by itself."""

    queries: tuple[StreamingQuery, ...]
    emitters: Mapping[str, WindowEmitter]
    run_to_end: bool
    alerts: AlertEvaluator | None = None  # the alert rule evaluated as windows close (None: not evaluated)

    def __iter__(self) -> Iterator[StreamingQuery]:
        return iter(self.queries)

    def __len__(self) -> int:
        return len(self.queries)

    def finish(self) -> dict[str, dict[str, int]]:
        """Once every query has stopped by itself without an error: emit and make final the
        windows each source still holds (:meth:`WindowEmitter.flush`, which evaluates the alert
        rule over them). A query that runs until stopped keeps its open windows for its next
        run. Returns the rows written per source."""
        if not self.run_to_end:
            return {}
        written = {source: emitter.flush() for source, emitter in self.emitters.items()}
        if self.alerts is not None:
            self.alerts.retry()  # an evaluation that failed during the run: again, raising its error
        return written


def await_all(queries: Iterable[StreamingQuery]) -> dict[str, dict[str, int]]:
    """Wait for every query; if one fails, stop the others and raise its error. Given what
    :func:`start_monitor` returned, a run that stopped by itself (``availableNow``, ``once``)
    is then finished: every window, the last included, is written (:meth:`MonitorQueries.finish`).
    Returns the rows that wrote per source (empty when there was nothing to finish).

    Example::

        await_all(start_monitor(spark, platform, uc, profile, trigger="availableNow"))
    """
    started = list(queries)
    try:
        for q in started:
            q.awaitTermination()
    finally:
        for q in started:
            if q.isActive:
                q.stop()
    return queries.finish() if isinstance(queries, MonitorQueries) else {}


def read_table(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig,
               name: Literal["drift", "quality", "performance"]) -> DataFrame:
    """One monitoring table, ordered by window (empty with its schema when not written yet)."""
    path = output_paths(platform, uc)[name]
    if not is_delta_table(spark, path):
        return spark.createDataFrame([], OUTPUT_SCHEMAS[name])
    return read_delta(spark, path).orderBy("window_start")
