"""Data quality: bronze records → typed silver rows + quarantined rows + a quality report.

Every bronze record ends up in exactly one place: silver when it parses and
passes every rule, otherwise quarantine with the first failing rule as its
``reason`` (all failing rules in ``reasons``). Rules, in the order they are
reported, come from the use case's schema (``conf/usecases/<uc>.yaml``):

===================  =======================================================
reason               when
===================  =======================================================
``not_json``         the value is null, not UTF-8, not JSON, or JSON but not an object
``missing_required`` a ``required`` field (or the id) is absent or null
``wrong_type``       present in the raw JSON, null after typed parsing
``out_of_range``     a number below ``min`` or above ``max``
``not_allowed``      a value outside ``allowed``
``too_long``         a string longer than ``max_length``
``duplicate``        a valid record whose id was already seen (first kept)
===================  =======================================================

Per-field reasons carry the field, e.g. ``out_of_range:amount``.

Thresholds live in the ``validation:`` section; exceeding an error limit
raises :class:`DataQualityError`, exceeding a ``warn:`` limit only logs::

    validation:
      max_quarantine_rate: 0.2        # error: share of a run's records quarantined
      max_duplicate_rate: 0.1         # error: share of records that are duplicates
      max_missing_rate: {device: 0.6} # error: share of JSON records without the field
      warn: {max_quarantine_rate: 0.05}
      labels:                         # the same keys for the label stream, plus:
        time_field: label_time

Example::

    ds = event_dataset(usecase)
    classified = classify(bronze, ds)
    report = quality_report(classified, ds, run_id="r1", run_time=now)
    enforce(report, ds.limits)        # raises DataQualityError past an error limit
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from driftline.catalog import BRONZE_COLUMNS, REPORT_SCHEMA
from driftline.config import FieldSpec, UseCaseConfig
from driftline.config.checks import check_dataset_fields
from driftline.config.sections import DatasetLimits, JsonSpec, Limits, ValidationSpec
from driftline.errors import DataQualityError, UsageError

log = logging.getLogger(__name__)

RULES = ("not_json", "missing_required", "wrong_type", "out_of_range", "not_allowed", "too_long", "unknown_field",
         "duplicate")
SOURCE_COLUMNS = ("topic", "partition", "offset")
_SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "timestamp": T.TimestampType(),
}


# --------------------------------------------------------------------------- configuration


def validation_spec(usecase: UseCaseConfig) -> ValidationSpec:
    """The use case's ``validation:`` section (parsed and checked at load).

    Example::

        validation_spec(load_usecase("fraud")).max_quarantine_rate  # 0.2
    """
    return usecase.validation


@dataclass(frozen=True)
class Dataset:
    """One stream of a use case as the validator sees it: fields, id and limits."""

    name: Literal["events", "labels"]
    fields: tuple[FieldSpec, ...]
    id_field: str
    time_field: str
    limits: DatasetLimits = DatasetLimits()
    binary_fields: tuple[str, ...] = ()
    json: JsonSpec = JsonSpec()

    def __post_init__(self) -> None:
        check_dataset_fields(self.name, self.fields, self.id_field, self.time_field, self.limits)


def event_dataset(usecase: UseCaseConfig) -> Dataset:
    """The event stream: the use case's schema, ``event_id`` and ``event_time``."""
    return Dataset("events", tuple(usecase.schema_), usecase.event_id, usecase.event_time,
                   usecase.validation.event_limits(), json=usecase.validation.json_)


def label_dataset(usecase: UseCaseConfig) -> Dataset:
    """The label stream: ``{<event_id>, <label.field>, <labels.time_field>}``.

    A binary label accepts ``true``/``false`` or ``0``/``1`` and is stored as int 0/1;
    a regression label is a double.
    """
    spec = validation_spec(usecase).labels
    label = usecase.label
    label_field = (
        FieldSpec(name=label.field, type="int", required=True, min=0, max=1)
        if label.kind == "binary"
        else FieldSpec(name=label.field, type="double", required=True)
    )
    fields = (
        FieldSpec(name=usecase.event_id, type=usecase.field(usecase.event_id).type, required=True),
        label_field,
        FieldSpec(name=spec.time_field, type="timestamp", required=True),
    )
    limits = usecase.validation.label_limits()
    binary = (label.field,) if label.kind == "binary" else ()
    return Dataset("labels", fields, usecase.event_id, spec.time_field, limits, binary, usecase.validation.json_)


def json_options(spec: JsonSpec) -> dict[str, str]:
    """Spark JSON reader options for ``validation.json``: RFC 8259 unless the use case opts in
    (Spark's own defaults accept single quotes and ``NaN``/``Infinity``)."""
    return {
        "mode": "PERMISSIVE",
        "allowSingleQuotes": str(spec.single_quotes).lower(),
        "allowNonNumericNumbers": str(spec.non_numeric_numbers).lower(),
    }


def spark_schema(fields: Sequence[FieldSpec]) -> T.StructType:
    """The typed Spark schema of ``fields`` (all nullable: rules decide what is required)."""
    return T.StructType([T.StructField(f.name, _SPARK_TYPES[f.type], True) for f in fields])


# --------------------------------------------------------------------------- classification


def _binary_value(raw: Column) -> Column:
    text = F.lower(F.trim(raw))
    return (
        F.when(text.isin("true", "1", "1.0"), F.lit(1))
        .when(text.isin("false", "0", "0.0"), F.lit(0))
        .cast("int")
    )


def _field_checks(f: FieldSpec, raw: Column, value: Column, is_id: bool) -> list[tuple[str, Column]]:
    checks: list[tuple[str, Column]] = []
    if f.required or is_id:
        checks.append((f"missing_required:{f.name}", raw.isNull()))
    wrong = raw.isNotNull() & value.isNull()
    if f.type == "timestamp":
        # Spark would read a bare number as epoch seconds (1.7e12 ms -> year 55840):
        # a timestamp must arrive as text.
        wrong = wrong | raw.rlike(r"^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$")
    checks.append((f"wrong_type:{f.name}", wrong))
    below = value < F.lit(f.min) if f.min is not None else F.lit(False)
    above = value > F.lit(f.max) if f.max is not None else F.lit(False)
    if f.min is not None or f.max is not None:
        checks.append((f"out_of_range:{f.name}", below | above))
    if f.allowed is not None:
        checks.append((f"not_allowed:{f.name}", ~value.cast("string").isin(*f.allowed)))
    if f.max_length is not None:
        checks.append((f"too_long:{f.name}", F.length(value) > F.lit(f.max_length)))
    return checks


def check_records(bronze: DataFrame, dataset: Dataset) -> DataFrame:
    """Parse bronze ``value`` JSON against ``dataset`` and list each record's failing rules,
    row by row (no shuffle, so a stream can use it): the bronze columns plus ``raw`` (each
    field's JSON text), ``parsed`` (typed fields), ``unknown`` (top-level keys the schema
    does not name, sorted; null when not JSON), ``reasons`` (``[]`` when good) and ``reason``
    (the first, null when good). Duplicates are not looked for: see :func:`classify`.

    A record is ``not_json`` unless it is a JSON object under ``validation.json``'s rules.

    Example::

        check_records(kafka_stream_as_bronze, event_dataset(uc)).where("reason IS NOT NULL")
    """
    missing = [c for c in BRONZE_COLUMNS if c not in bronze.columns]
    if missing:
        raise UsageError(f"bronze: expected bronze columns {list(BRONZE_COLUMNS)}, missing {missing}")
    typed_fields = [
        FieldSpec(name=f.name, type="string") if f.name in dataset.binary_fields else f for f in dataset.fields
    ]
    options = json_options(dataset.json)
    names = [f.name for f in dataset.fields]
    # Every top-level key with its JSON text (null when not an object); the typed parse
    # under the same rules gives null for a value of the wrong type.
    fields_map = F.from_json(F.col("value"), "map<string,string>", options)
    parsed = bronze.select(
        *[F.col(c) for c in BRONZE_COLUMNS],
        fields_map.alias("fields"),
        F.from_json(F.col("value"), spark_schema(typed_fields), options).alias("typed"),
    ).select(
        *[F.col(c) for c in BRONZE_COLUMNS],
        F.struct(*[F.col("fields")[n].alias(n) for n in names]).alias("raw"),
        F.col("typed"),
        F.array_sort(F.array_except(F.map_keys(F.col("fields")), F.array(*[F.lit(n) for n in names])))
        .alias("unknown"),
        # bytes that are not UTF-8 make the record not JSON (RFC 8259 text is UTF-8); Spark would
        # parse them into strings no Arrow reader (delta-rs) can read back
        (F.col("fields").isNull() | ~F.is_valid_utf8(F.col("value"))).alias("not_json"),
    )
    values = {
        f.name: _binary_value(F.col("raw")[f.name]) if f.name in dataset.binary_fields else F.col("typed")[f.name]
        for f in dataset.fields
    }
    checks = [
        check
        for f in dataset.fields
        for check in _field_checks(f, F.col("raw")[f.name], values[f.name], f.name == dataset.id_field)
    ]
    rule_reasons = F.filter(
        F.array(*[F.when(cond, F.lit(reason)) for reason, cond in checks]), lambda r: r.isNotNull()
    )
    if dataset.json.extra == "forbid":
        rule_reasons = F.concat(rule_reasons, F.transform(F.col("unknown"), lambda n: F.concat(F.lit("unknown_field:"), n)))
    return parsed.select(
        # quarantine and the DLQ keep the record as valid text (U+FFFD where a byte was not
        # UTF-8); the raw bytes stay in Kafka and bronze at its topic, partition and offset
        *[F.make_valid_utf8(F.col(c)).alias(c) if c in ("key", "value") else F.col(c) for c in BRONZE_COLUMNS],
        F.col("raw"),
        F.struct(*[v.alias(n) for n, v in values.items()]).alias("parsed"),
        F.col("unknown"),
        F.when(F.col("not_json"), F.array(F.lit("not_json"))).otherwise(rule_reasons).alias("reasons"),
    ).select("*", F.try_element_at(F.col("reasons"), F.lit(1)).alias("reason"))


def classify(bronze: DataFrame, dataset: Dataset) -> DataFrame:
    """:func:`check_records`, and duplicates of a valid id marked ``duplicate``: the copy with
    the earliest Kafka timestamp, then the lowest (topic, partition, offset), is kept.

    Example::

        classify(spark.createDataFrame([...], bronze_schema), event_dataset(uc)).where("reason IS NULL")
    """
    checked = check_records(bronze, dataset)
    is_valid = F.col("reason").isNull()
    # Invalid rows get a unique partition key of their own: only valid ids compete.
    dedupe_key = F.when(is_valid, F.col("parsed")[dataset.id_field]).otherwise(
        F.concat_ws("/", F.lit("invalid"), *[F.col(c) for c in SOURCE_COLUMNS])
    )
    first_seen = Window.partitionBy(dedupe_key).orderBy(
        F.col("kafka_timestamp").asc_nulls_last(), *[F.col(c) for c in SOURCE_COLUMNS]
    )
    is_duplicate = is_valid & (F.row_number().over(first_seen) > 1)
    return checked.select(
        *[F.col(c) for c in BRONZE_COLUMNS],
        F.col("raw"),
        F.col("parsed"),
        F.col("unknown"),
        F.when(is_duplicate, F.array(F.lit("duplicate"))).otherwise(F.col("reasons")).alias("reasons"),
    ).select("*", F.try_element_at(F.col("reasons"), F.lit(1)).alias("reason"))


def good_records(classified: DataFrame, dataset: Dataset) -> DataFrame:
    """The silver rows: typed fields in schema order, then source coordinates and ingest time."""
    return classified.where(F.col("reason").isNull()).select(
        *[F.col("parsed")[f.name].alias(f.name) for f in dataset.fields],
        *[F.col(c) for c in SOURCE_COLUMNS],
        F.col("ingest_time"),
    )


def quarantined_records(classified: DataFrame, run_id: str, run_time: dt.datetime) -> DataFrame:
    """The quarantine rows: source coordinates, the raw record and why it was rejected."""
    return classified.where(F.col("reason").isNotNull()).select(
        *[F.col(c) for c in SOURCE_COLUMNS],
        F.col("key"),
        F.col("value"),
        F.col("reason"),
        F.col("reasons"),
        F.col("kafka_timestamp"),
        F.col("ingest_time"),
        F.lit(run_id).alias("run_id"),
        F.lit(run_time).cast("timestamp").alias("quarantined_at"),
    )


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Violation:
    """One limit exceeded: the config key, its limit and what was observed."""

    key: str
    limit: float
    observed: float
    detail: str

    @property
    def message(self) -> str:
        return f"{self.key} = {self.limit:g} exceeded: observed {self.observed:.4g} ({self.detail})"




@dataclass(frozen=True)
class QualityReport:
    """One validation run over one dataset: counts, rates and per-rule counts.

    ``reason_counts`` counts records by their first reason (it sums to
    ``records_quarantined``); ``rule_counts`` counts records breaking each
    rule at all (a record can break several). ``missing_rate`` is the share of
    JSON records where a field is absent or null.
    """

    run_id: str
    run_time: dt.datetime
    usecase: str
    dataset: str
    records_in: int
    records_good: int
    duplicates: int
    missing_rate: Mapping[str, float]
    reason_counts: Mapping[str, int]
    rule_counts: Mapping[str, int]
    source_table: str | None = None
    source_version: int | None = None
    violations: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unknown_fields: Mapping[str, int] = field(default_factory=dict)

    @property
    def records_quarantined(self) -> int:
        return self.records_in - self.records_good

    @property
    def quarantine_rate(self) -> float:
        return self.records_quarantined / self.records_in if self.records_in else 0.0

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / self.records_in if self.records_in else 0.0

    @property
    def status(self) -> str:
        return "error" if self.violations else "warn" if self.warnings else "ok"

    def with_checks(self, errors: Sequence[Violation], warnings: Sequence[Violation]) -> QualityReport:
        data = asdict(self)
        data["violations"] = tuple(v.message for v in errors)
        data["warnings"] = tuple(v.message for v in warnings)
        return QualityReport(**data)

    def to_frame(self, spark: SparkSession) -> DataFrame:
        """The report as one row of :data:`REPORT_SCHEMA`, for ``monitoring/<uc>_validation``."""
        row = {
            **asdict(self),
            "records_quarantined": self.records_quarantined,
            "quarantine_rate": self.quarantine_rate,
            "duplicate_rate": self.duplicate_rate,
            "status": self.status,
            "missing_rate": dict(self.missing_rate),
            "reason_counts": dict(self.reason_counts),
            "rule_counts": dict(self.rule_counts),
            "unknown_fields": dict(self.unknown_fields),
            "violations": list(self.violations),
            "warnings": list(self.warnings),
        }
        return spark.createDataFrame([tuple(row[f.name] for f in REPORT_SCHEMA.fields)], REPORT_SCHEMA)


def quality_report(
    classified: DataFrame,
    dataset: Dataset,
    *,
    usecase: str,
    run_id: str,
    run_time: dt.datetime,
    source_table: str | None = None,
    source_version: int | None = None,
) -> QualityReport:
    """Count what :func:`classify` decided, in one pass.

    The pass groups records by their reasons and which fields they miss; only
    that summary (a handful of rows) reaches the driver, never the records.

    Example::

        quality_report(classified, ds, usecase="fraud", run_id="r1", run_time=now).quarantine_rate
    """
    names = [f.name for f in dataset.fields]
    summary = (
        classified.groupBy(
            F.col("reasons"), F.array(*[F.col("raw")[n].isNull() for n in names]).alias("missing"), F.col("unknown")
        )
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    records_in = records_good = duplicates = json_records = 0
    missing = dict.fromkeys(names, 0)
    reason_counts: dict[str, int] = {}
    rule_counts: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for row in summary:
        n, reasons = int(row["n"]), list(row["reasons"])
        for name in row["unknown"] or ():
            unknown[name] = unknown.get(name, 0) + n
        records_in += n
        if not reasons:
            records_good += n
            json_records += n
        else:
            reason_counts[reasons[0]] = reason_counts.get(reasons[0], 0) + n
            for rule in {r.split(":", 1)[0] for r in reasons}:
                rule_counts[rule] = rule_counts.get(rule, 0) + n
            duplicates += n if reasons == ["duplicate"] else 0
            json_records += 0 if "not_json" in reasons else n
        if "not_json" not in reasons:
            for name, is_missing in zip(names, row["missing"], strict=True):
                missing[name] += n if is_missing else 0
    missing_rate = {n: (missing[n] / json_records if json_records else 0.0) for n in names}
    return QualityReport(
        run_id=run_id,
        run_time=run_time,
        usecase=usecase,
        dataset=dataset.name,
        records_in=records_in,
        records_good=records_good,
        duplicates=duplicates,
        missing_rate=missing_rate,
        reason_counts=dict(sorted(reason_counts.items())),
        rule_counts={rule: rule_counts[rule] for rule in RULES if rule in rule_counts},
        source_table=source_table,
        source_version=source_version,
        unknown_fields=dict(sorted(unknown.items())),
    )


def check_limits(report: QualityReport, limits: Limits, prefix: str = "validation") -> list[Violation]:
    """The limits ``report`` exceeds, each naming its config key (``prefix.<key>``).

    Example::

        check_limits(report, Limits(max_quarantine_rate=0.1))  # [Violation('validation.max_quarantine_rate', ...)]
    """
    what = f"{report.usecase} {report.dataset}"
    found: list[Violation] = []
    if limits.max_quarantine_rate is not None and report.quarantine_rate > limits.max_quarantine_rate:
        found.append(Violation(
            f"{prefix}.max_quarantine_rate", limits.max_quarantine_rate, report.quarantine_rate,
            f"{report.records_quarantined} of {report.records_in} {what} records quarantined",
        ))
    if limits.max_duplicate_rate is not None and report.duplicate_rate > limits.max_duplicate_rate:
        found.append(Violation(
            f"{prefix}.max_duplicate_rate", limits.max_duplicate_rate, report.duplicate_rate,
            f"{report.duplicates} of {report.records_in} {what} records are duplicates",
        ))
    for name, limit in sorted(limits.max_missing_rate.items()):
        observed = report.missing_rate.get(name, 0.0)
        if observed > limit:
            found.append(Violation(
                f"{prefix}.max_missing_rate.{name}", limit, observed, f"{name} missing in {what} records",
            ))
    return found


def evaluate(report: QualityReport, limits: DatasetLimits, prefix: str = "validation") -> QualityReport:
    """``report`` with the error and warning limits it exceeds recorded (``status`` follows)."""
    errors = check_limits(report, limits, prefix)
    warnings = check_limits(report, limits.warn, f"{prefix}.warn")
    for w in warnings:
        log.warning("data quality warning: %s", w.message)
    return report.with_checks(errors, warnings)


def raise_for_status(report: QualityReport) -> None:
    """Raise :class:`DataQualityError` when :func:`evaluate` recorded an exceeded error limit."""
    if report.violations:
        raise DataQualityError(f"{report.usecase} {report.dataset}: " + "; ".join(report.violations))


def enforce(report: QualityReport, limits: DatasetLimits, prefix: str = "validation") -> QualityReport:
    """:func:`evaluate`, then :func:`raise_for_status`.

    Example::

        enforce(report, event_dataset(uc).limits)
        # DataQualityError: fraud events: validation.max_quarantine_rate = 0.2 exceeded: observed 0.35 (...)
    """
    checked = evaluate(report, limits, prefix)
    raise_for_status(checked)
    return checked


def limits_prefix(dataset: Dataset) -> str:
    """The config key prefix of ``dataset``'s limits: ``validation`` or ``validation.labels``."""
    return "validation" if dataset.name == "events" else "validation.labels"
