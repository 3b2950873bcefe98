"""Feature definitions from the use case's ``features:`` section, compiled into transforms.

One definition, three compilers that agree on the same events:

- :func:`point_in_time_features` (batch backfill): for every event, aggregates
  over the same entity's *strictly earlier* events in ``[t - window, t)``,
  never the event itself or anything later; window functions with explicit
  ``rangeBetween`` frames on epoch microseconds.
- :func:`online_features` (latest per entity): the value an event arriving
  just after ``as_of`` would get, i.e. events in ``(as_of - window, as_of]``.
- :func:`streaming_window_features` (Structured Streaming): watermarked
  ``groupBy(window(ts, window, slide), entity)``; the window ``[T - w, T)``
  holds exactly what the point-in-time backfill gives an event at time T.

The YAML::

    features:
      entity: customer_id              # default: the use case's entity_key
      aggregates:                      # fn: count | sum | mean | std | distinct_count
        - {name: txn_count_1h, fn: count, window: 1h}            # windows: 30s, 10m, 1h, 24h, 7d
        - {name: amount_mean_7d, fn: mean, column: amount, window: 7d}
        - {name: delivery_mean_7d, fn: mean, column: delivery_minutes, window: 7d,
           source: labels}             # over labels that had *arrived* (label_time) before t
      ratios:                          # numerator / denominator: fields or earlier features; null when /0
        - {name: amount_to_mean_7d, numerator: amount, denominator: amount_mean_7d}
      time_of_day: {hour: hour_of_day, is_night: is_night, night_start: 22, night_end: 6}
      numeric: [amount]                # passed through as they are
      categorical: [channel, country]  # passed through as strings

Empty windows give 0 for count, sum and distinct_count and null for mean and
std (std needs two values).

Example::

    spec = feature_spec(load_usecase("fraud"))
    offline = training_set(point_in_time_features(events, spec, labels), labels, spec)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from driftline.config import UseCaseConfig
from driftline.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MICROS = 1_000_000
_NUMERIC_TYPES = {"int", "long", "double"}
AggFn = Literal["count", "sum", "mean", "std", "distinct_count"]


def parse_duration(text: str) -> int:
    """Seconds in a window like ``30s``, ``10m``, ``1h``, ``24h``, ``7d``.

    Example::

        parse_duration("10m")  # 600
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"window: expected a positive duration like 30s, 10m, 1h, 7d; got {text!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


# --------------------------------------------------------------------------- definitions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Aggregate(_Strict):
    """An aggregate of one entity's past events (or arrived labels) over a trailing window."""

    name: str = Field(min_length=1)
    fn: AggFn
    window: str
    column: str | None = None
    source: Literal["events", "labels"] = "events"

    @property
    def window_s(self) -> int:
        return parse_duration(self.window)


class Ratio(_Strict):
    name: str = Field(min_length=1)
    numerator: str
    denominator: str


class TimeOfDay(_Strict):
    """Hour of the event time (session time zone) and a 0/1 night flag."""

    hour: str | None = None
    is_night: str | None = None
    night_start: int = Field(22, ge=0, le=23)
    night_end: int = Field(6, ge=0, le=23)


class FeatureDefinitions(_Strict):
    """The ``features:`` section as written in the YAML."""

    entity: str | None = None
    aggregates: list[Aggregate] = Field(default_factory=list)
    ratios: list[Ratio] = Field(default_factory=list)
    time_of_day: TimeOfDay = TimeOfDay()
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class FeatureSpec:
    """Feature definitions resolved against a use case: the input to every compiler."""

    id: str
    entity: str
    timestamp: str
    label: str
    label_time: str
    definitions: FeatureDefinitions

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        return tuple(self.definitions.aggregates)

    @property
    def ratios(self) -> tuple[Ratio, ...]:
        return tuple(self.definitions.ratios)

    def time_features(self) -> list[str]:
        tod = self.definitions.time_of_day
        return [n for n in (tod.hour, tod.is_night) if n]

    def columns(self) -> list[str]:
        """Feature column names in output order: numeric, categorical, time of day, aggregates, ratios."""
        d = self.definitions
        return [*d.numeric, *d.categorical, *self.time_features(), *(a.name for a in d.aggregates),
                *(r.name for r in d.ratios)]

    def ratio_fields(self) -> list[str]:
        """Event fields that ratios read and that are not features themselves."""
        features = set(self.columns())
        return sorted({ref for r in self.ratios for ref in (r.numerator, r.denominator)} - features)

    def entity_level_ratios(self) -> list[Ratio]:
        """Ratios of aggregates only (no event field): the ones the online table can hold."""
        known = {a.name for a in self.aggregates}
        found = []
        for r in self.ratios:
            if r.numerator in known and r.denominator in known:
                found.append(r)
                known.add(r.name)
        return found


def feature_spec(usecase: UseCaseConfig, label_time: str = "label_time") -> FeatureSpec:
    """Parse and check ``usecase.features`` against the use case's schema; errors name the key.

    Example::

        feature_spec(load_usecase("eta")).columns()  # ['items', ..., 'orders_10m', ...]
    """
    try:
        defs = FeatureDefinitions.model_validate(usecase.features)
    except ValidationError as e:
        problems = "; ".join(
            f"features.{'.'.join(str(p) for p in err['loc'])}: got {err.get('input')!r}, expected: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"usecase {usecase.name}: {problems}") from e
    spec = FeatureSpec(
        id=usecase.event_id,
        entity=defs.entity or usecase.entity_key,
        timestamp=usecase.event_time,
        label=usecase.label.field,
        label_time=label_time,
        definitions=defs,
    )
    _check(spec, usecase)
    return spec


def _check(spec: FeatureSpec, usecase: UseCaseConfig) -> None:
    types = {f.name: f.type for f in usecase.schema_}
    numeric_fields = {n for n, t in types.items() if t in _NUMERIC_TYPES}
    where = f"usecase {usecase.name}: features"

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{where}.{key}: {message}")

    if spec.entity not in types:
        fail("entity", f"{spec.entity!r} is not a field; expected one of {sorted(types)}")
    if types.get(spec.timestamp) != "timestamp":
        fail("timestamp", f"event_time {spec.timestamp!r} must be a timestamp field")
    for key, names, allowed in (("numeric", spec.definitions.numeric, numeric_fields),
                                ("categorical", spec.definitions.categorical, set(types))):
        for i, name in enumerate(names):
            if name not in allowed:
                fail(f"{key}[{i}]", f"{name!r} is not a {key} field; expected one of {sorted(allowed)}")
    reserved = {spec.id, spec.entity, spec.timestamp, spec.label, spec.label_time}
    seen: set[str] = set()
    for name in spec.columns():
        if name in seen:
            fail("", f"feature name {name!r} is defined twice")
        seen.add(name)
    for name in [*spec.time_features(), *(a.name for a in spec.aggregates), *(r.name for r in spec.ratios)]:
        if name in types or name in reserved:
            fail("", f"feature name {name!r} clashes with a field of the event or label")
    numeric_features = set(spec.definitions.numeric) | set(spec.time_features())
    for i, agg in enumerate(spec.aggregates):
        agg_key = f"aggregates[{i}]"
        try:
            parse_duration(agg.window)
        except ValueError as e:
            fail(f"{agg_key}.window", str(e))
        if agg.fn != "count" and agg.column is None:
            fail(f"{agg_key}.column", f"fn {agg.fn!r} needs a column")
        if agg.source == "labels":
            if agg.column not in (None, spec.label):
                fail(f"{agg_key}.column", f"a labels aggregate reads the label {spec.label!r}, got {agg.column!r}")
        elif agg.column is not None:
            allowed = numeric_fields if agg.fn in {"sum", "mean", "std"} else set(types)
            if agg.column not in allowed:
                fail(f"{agg_key}.column", f"{agg.column!r} is not a suitable field for {agg.fn}; "
                                          f"expected one of {sorted(allowed)}")
        numeric_features.add(agg.name)
    for i, ratio in enumerate(spec.ratios):
        for side in ("numerator", "denominator"):
            ref = getattr(ratio, side)
            if ref not in numeric_fields and ref not in numeric_features:
                fail(f"ratios[{i}].{side}", f"{ref!r} is neither a numeric field nor an earlier numeric feature")
        numeric_features.add(ratio.name)


# --------------------------------------------------------------------------- shared pieces


def _aggregate(fn: str, value: Column) -> Column:
    """The aggregate expression of ``fn`` over ``value`` (nulls ignored), before :func:`_finish`."""
    if fn == "count":
        return F.count(value)
    if fn == "sum":
        return F.sum(value)
    if fn == "mean":
        return F.avg(value)
    if fn == "std":
        return F.stddev_samp(value)
    if fn == "distinct_count":
        # COUNT(DISTINCT) is allowed neither over windows nor in streaming aggregations.
        return F.collect_set(value)
    raise ValueError(f"fn: unknown aggregate {fn!r}")


def _finish(fn: str, aggregated: Column) -> Column:
    if fn == "count":
        return F.coalesce(aggregated, F.lit(0)).cast("long")
    if fn == "sum":
        return F.coalesce(aggregated.cast("double"), F.lit(0.0))
    if fn == "distinct_count":
        return F.size(aggregated).cast("long")
    return aggregated.cast("double")


def _input_value(agg: Aggregate) -> Column:
    """What ``agg`` aggregates on a timeline row: its column (or 1) on rows of its source, else null."""
    value = F.col(agg.column) if agg.column else F.lit(1)
    return F.when(F.col("_source") == F.lit(agg.source), value)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.try_divide(numerator.cast("double"), denominator.cast("double"))


def _time_of_day(spec: FeatureSpec) -> list[Column]:
    tod = spec.definitions.time_of_day
    hour = F.hour(F.col(spec.timestamp))
    out = []
    if tod.hour:
        out.append(hour.cast("int").alias(tod.hour))
    if tod.is_night:
        if tod.night_start > tod.night_end:
            night = (hour >= tod.night_start) | (hour < tod.night_end)
        else:
            night = (hour >= tod.night_start) & (hour < tod.night_end)
        out.append(night.cast("int").alias(tod.is_night))
    return out


def _timeline(events: DataFrame, spec: FeatureSpec, labels: DataFrame | None) -> DataFrame:
    """Events (``_source = 'events'``) and, when label aggregates exist, arrived labels
    (``_source = 'labels'``, at their arrival time) as one time-ordered stream per entity."""
    ts_us = F.unix_micros(F.col(spec.timestamp))
    event_fields = sorted({spec.timestamp, *spec.definitions.numeric, *spec.definitions.categorical,
                           *spec.ratio_fields()}
                          | {a.column for a in spec.aggregates if a.column and a.source == "events"})
    base = events.select(
        F.col(spec.id), F.col(spec.entity), *[F.col(c) for c in event_fields if c != spec.entity],
        ts_us.alias("_ts_us"), F.lit("events").alias("_source"),
    )
    if not any(a.source == "labels" for a in spec.aggregates):
        return base
    if labels is None:
        raise ValueError("labels: the feature definitions aggregate labels; pass the silver labels")
    # A label counts from when it arrived, and never before its own event.
    arrived = F.greatest(F.unix_micros(F.col(spec.label_time)), ts_us)
    label_rows = labels.select(F.col(spec.id), F.col(spec.label), F.col(spec.label_time)).join(
        events.select(F.col(spec.id), F.col(spec.entity), F.col(spec.timestamp)), on=spec.id, how="inner"
    ).select(
        F.lit(None).cast(events.schema[spec.id].dataType).alias(spec.id), F.col(spec.entity), F.col(spec.label),
        arrived.alias("_ts_us"), F.lit("labels").alias("_source"),
    )
    return base.unionByName(label_rows, allowMissingColumns=True)


# --------------------------------------------------------------------------- (a) point in time


def point_in_time_features(events: DataFrame, spec: FeatureSpec, labels: DataFrame | None = None) -> DataFrame:
    """Every event with its features as of its own time (no leakage).

    Aggregates see only the same entity's events with ``t - window <= time < t``
    (microsecond resolution: events at the very same instant do not see each
    other). Output: ``id, entity, timestamp, *spec.columns()``.

    Example::

        point_in_time_features(silver_events, feature_spec(uc), silver_labels)
    """
    timeline = _timeline(events, spec, labels)
    by_time = Window.partitionBy(F.col(spec.entity)).orderBy(F.col("_ts_us"))
    aggregates = [
        _finish(a.fn, _aggregate(a.fn, _input_value(a)).over(by_time.rangeBetween(-a.window_s * _MICROS, -1)))
        .alias(a.name)
        for a in spec.aggregates
    ]
    with_aggs = timeline.select(
        F.col(spec.id), F.col(spec.entity), F.col(spec.timestamp), F.col("_source"),
        *[F.col(c) for c in spec.definitions.numeric],
        *[F.col(c).cast("string").alias(c) for c in spec.definitions.categorical],
        *[F.col(c) for c in spec.ratio_fields()],
        *_time_of_day(spec),
        *aggregates,
    ).where(F.col("_source") == F.lit("events"))
    return with_ratios(with_aggs, spec.ratios).select(
        F.col(spec.id), F.col(spec.entity), F.col(spec.timestamp), *[F.col(c) for c in spec.columns()]
    )


def with_ratios(df: DataFrame, ratios: Sequence[Ratio]) -> DataFrame:
    """Add ratio columns in definition order (a ratio may use an earlier one)."""
    for r in ratios:
        df = df.select("*", _ratio(F.col(r.numerator), F.col(r.denominator)).alias(r.name))
    return df


def training_set(features: DataFrame, labels: DataFrame, spec: FeatureSpec) -> DataFrame:
    """The offline training rows: each labelled event's point-in-time features and its label.

    Example::

        training_set(point_in_time_features(events, spec, labels), labels, spec)
    """
    return features.join(
        labels.select(F.col(spec.id), F.col(spec.label), F.col(spec.label_time)), on=spec.id, how="inner"
    ).select(
        F.col(spec.id), F.col(spec.entity), F.col(spec.timestamp), *[F.col(c) for c in spec.columns()],
        F.col(spec.label), F.col(spec.label_time),
    )


# --------------------------------------------------------------------------- (b) online snapshot


def online_columns(spec: FeatureSpec) -> list[str]:
    """Columns of the online table after the entity and ``as_of``: aggregates and their ratios."""
    return [*(a.name for a in spec.aggregates), *(r.name for r in spec.entity_level_ratios())]


def online_features(
    events: DataFrame, spec: FeatureSpec, as_of: dt.datetime, labels: DataFrame | None = None
) -> DataFrame:
    """Latest aggregate values per entity: what an event arriving right after ``as_of`` would see.

    One grouped aggregation (no sort): each aggregate reads its source's rows
    with ``as_of - window < time <= as_of``. Output: ``entity, as_of, *online_columns(spec)``,
    one row per entity present in ``events``.

    Example::

        online_features(silver_events, spec, as_of=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    """
    if not isinstance(as_of, dt.datetime):
        raise TypeError(f"as_of: expected a datetime, got {type(as_of).__name__}")
    as_of_col = F.lit(as_of).cast("timestamp")
    as_of_us = F.unix_micros(as_of_col)
    timeline = _timeline(events, spec, labels)

    def in_window(agg: Aggregate) -> Column:
        return (F.col("_ts_us") > as_of_us - F.lit(agg.window_s * _MICROS)) & (F.col("_ts_us") <= as_of_us)

    latest = timeline.groupBy(F.col(spec.entity)).agg(
        *[_finish(a.fn, _aggregate(a.fn, F.when(in_window(a), _input_value(a)))).alias(a.name) for a in spec.aggregates]
    )
    return with_ratios(latest, spec.entity_level_ratios()).select(
        F.col(spec.entity), as_of_col.alias("as_of"), *[F.col(c) for c in online_columns(spec)]
    )


# --------------------------------------------------------------------------- (c) streaming


@dataclass(frozen=True)
class StreamingWindow:
    """The event aggregates that share one window length: one ``groupBy(window(...), entity)``."""

    window_s: int
    slide_s: int
    aggregates: tuple[Aggregate, ...]

    @property
    def duration(self) -> str:
        return f"{self.window_s} seconds"

    @property
    def slide(self) -> str:
        return f"{self.slide_s} seconds"


def streaming_plan(spec: FeatureSpec, slide: str = "1m") -> list[StreamingWindow]:
    """Group the event aggregates by window length, each sliding every ``slide``
    (capped at the window length). Label aggregates are batch-only: serve them from the online table.

    Example::

        [w.duration for w in streaming_plan(spec, slide="1m")]  # ['600 seconds', '3600 seconds']
    """
    slide_s = parse_duration(slide)
    by_window: dict[int, list[Aggregate]] = {}
    for agg in spec.aggregates:
        if agg.source == "events":
            by_window.setdefault(agg.window_s, []).append(agg)
    return [StreamingWindow(w, min(slide_s, w), tuple(aggs)) for w, aggs in sorted(by_window.items())]


def streaming_window_features(
    events: DataFrame, spec: FeatureSpec, window: StreamingWindow, watermark: str | None = "10 minutes"
) -> DataFrame:
    """Sliding-window aggregates per entity for a (streaming or static) DataFrame of events.

    Output: ``entity, window_start, window_end, *aggregate names``; the row for
    the window ending at T equals :func:`point_in_time_features` for an event at T.
    ``watermark`` bounds the state (None for static input).

    Example::

        for w in streaming_plan(spec):
            q = streaming_window_features(parsed_stream, spec, w).writeStream.outputMode("update")...
    """
    if not window.aggregates:
        raise ValueError("window: expected at least one aggregate")
    source = events.withWatermark(spec.timestamp, watermark) if watermark else events
    tagged = source.select("*", F.lit("events").alias("_source"))
    return (
        tagged.groupBy(F.window(F.col(spec.timestamp), window.duration, window.slide).alias("window"),
                       F.col(spec.entity))
        .agg(*[_finish(a.fn, _aggregate(a.fn, _input_value(a))).alias(a.name) for a in window.aggregates])
        .select(
            F.col(spec.entity),
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            *[F.col(a.name) for a in window.aggregates],
        )
    )
