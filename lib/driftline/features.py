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
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from driftline.config import UseCaseConfig
from driftline.config.sections import Aggregate, FeatureDefinitions, Ratio, window_seconds
from driftline.errors import ConfigError, UsageError

_MICROS = 1_000_000


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class FeatureSpec:
    """Feature definitions resolved against a use case: the input to every compiler."""

    id: str
    entity: str
    timestamp: str
    label: str
    label_time: str
    definitions: FeatureDefinitions
    booleans: frozenset[str] = frozenset()  # boolean event fields (a numeric one is read as 0/1)

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        return tuple(self.definitions.aggregates)

    @property
    def ratios(self) -> tuple[Ratio, ...]:
        return tuple(self.definitions.ratios)

    def time_features(self) -> list[str]:
        return self.definitions.time_features()

    def key_columns(self) -> list[str]:
        """The event id and the entity: one column when the entity is the event itself."""
        return [self.id] if self.entity == self.id else [self.id, self.entity]

    def columns(self) -> list[str]:
        """Feature column names in output order: numeric, categorical, time of day, aggregates, ratios."""
        return self.definitions.columns()

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


def feature_spec(usecase: UseCaseConfig) -> FeatureSpec:
    """The use case's feature definitions resolved against its fields (checked at load).

    Example::

        feature_spec(load_usecase("eta")).columns()  # ['items', ..., 'orders_10m', ...]
    """
    return FeatureSpec(
        id=usecase.event_id,
        entity=usecase.features.entity or usecase.entity_key,
        timestamp=usecase.event_time,
        label=usecase.label.field,
        label_time=usecase.validation.labels.time_field,
        definitions=usecase.features,
        booleans=frozenset(f.name for f in usecase.schema_ if f.type == "boolean"),
    )


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
    raise ConfigError(f"fn: unknown aggregate {fn!r}")


def _finish(fn: str, aggregated: Column) -> Column:
    if fn == "count":
        return F.coalesce(aggregated, F.lit(0)).cast("long")
    if fn == "sum":
        return F.coalesce(aggregated.cast("double"), F.lit(0.0))
    if fn == "distinct_count":
        return F.size(aggregated).cast("long")
    return aggregated.cast("double")


def event_feature(spec: FeatureSpec, name: str) -> Column:
    """An event field as a feature, the same in batch and stream: categorical values as
    strings, a boolean numeric feature as 0.0/1.0, other fields as they are."""
    if name in spec.definitions.categorical:
        return F.col(name).cast("string").alias(name)
    if name in spec.booleans and name in spec.definitions.numeric:
        return F.col(name).cast("double").alias(name)
    return F.col(name)


def _input_value(agg: Aggregate) -> Column:
    """What ``agg`` aggregates on a timeline row: its column (or 1) on rows of its source, else null."""
    value = F.col(agg.column) if agg.column else F.lit(1)
    return F.when(F.col("_source") == F.lit(agg.source), value)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.try_divide(numerator.cast("double"), denominator.cast("double"))


def time_of_day_columns(spec: FeatureSpec) -> list[Column]:
    """The time-of-day features (hour, night flag) of the event time, as the definitions name them."""
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
        *[F.col(c) for c in spec.key_columns()], *[F.col(c) for c in event_fields if c not in spec.key_columns()],
        ts_us.alias("_ts_us"), F.lit("events").alias("_source"),
    )
    if not any(a.source == "labels" for a in spec.aggregates):
        return base
    if labels is None:
        raise UsageError("labels: the feature definitions aggregate labels; pass the silver labels")
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
        *[F.col(c) for c in spec.key_columns()], F.col(spec.timestamp), F.col("_source"),
        *[event_feature(spec, c) for c in (*spec.definitions.numeric, *spec.definitions.categorical)],
        *[F.col(c) for c in spec.ratio_fields()],
        *time_of_day_columns(spec),
        *aggregates,
    ).where(F.col("_source") == F.lit("events"))
    return with_ratios(with_aggs, spec.ratios).select(
        *[F.col(c) for c in spec.key_columns()], F.col(spec.timestamp), *[F.col(c) for c in spec.columns()]
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
        *[F.col(c) for c in spec.key_columns()], F.col(spec.timestamp), *[F.col(c) for c in spec.columns()],
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
    slide_s = window_seconds(slide)
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
        raise UsageError("window: expected at least one aggregate")
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
