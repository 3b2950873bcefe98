"""The catalog: every Delta table, checkpoint and topic the platform writes, in one place.

Each table has a layer, a name (per use case or shared), what it holds, its
schema where the platform fixes one (silver and gold follow the use case's
fields and features), its keys and partitioning. Paths are never spelled where a
table is used: ask the catalog.

    path(platform, "bronze_events", uc)          # <lake>/bronze/fraud_events
    TABLES["predictions"].schema                 # the online predictions' columns
    usecase_tables("fraud")                      # [("bronze", "fraud_events"), ...] for reports and tests
    checkpoint(platform, "score", uc)            # <checkpoints>/score/fraud

Topics are ``<uc>.events``, ``<uc>.labels``, ``<uc>.predictions``, ``<uc>.alerts`` and
``<uc>.dlq`` (:data:`TOPICS`, :meth:`UseCaseConfig.topic`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import types as T

from driftline.errors import ConfigError

if TYPE_CHECKING:
    from driftline.config import PlatformConfig, UseCaseConfig

# --------------------------------------------------------------------------- schemas

BRONZE_SCHEMA = T.StructType([
    T.StructField("key", T.StringType(), True),
    T.StructField("value", T.StringType(), True),
    T.StructField("topic", T.StringType(), True),
    T.StructField("partition", T.IntegerType(), True),
    T.StructField("offset", T.LongType(), True),
    T.StructField("kafka_timestamp", T.TimestampType(), True),
    T.StructField("ingest_time", T.TimestampType(), True),
])
# Bronze records share one shape whatever their source (Kafka or simulator files).
BRONZE_COLUMNS = tuple(BRONZE_SCHEMA.fieldNames())
SOURCE_KEYS = ("topic", "partition", "offset")
# Columns quarantine adds to a bronze record.
QUARANTINE_COLUMNS = ("reason", "reasons", "run_id", "quarantined_at")
# No event field may take one of these names: they hold source coordinates.
RESERVED_FIELD_NAMES = frozenset(BRONZE_COLUMNS) | frozenset(QUARANTINE_COLUMNS)

# --------------------------------------------------------------------------- table schemas

PREDICTION_SCHEMA = T.StructType([
    T.StructField("event_id", T.StringType()),
    T.StructField("entity", T.StringType()),
    T.StructField("event_time", T.TimestampType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("prediction", T.DoubleType()),
    T.StructField("served", T.BooleanType()),
    T.StructField("route", T.StringType()),
    T.StructField("model_name", T.StringType()),
    T.StructField("model_version", T.IntegerType()),
    T.StructField("batch_id", T.LongType()),
    T.StructField("scoring_time", T.TimestampType()),
    T.StructField("kafka_timestamp", T.TimestampType()),
])

REPORT_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("run_time", T.TimestampType(), False),
        T.StructField("usecase", T.StringType(), False),
        T.StructField("dataset", T.StringType(), False),
        T.StructField("source_table", T.StringType(), True),
        T.StructField("source_version", T.LongType(), True),
        T.StructField("records_in", T.LongType(), False),
        T.StructField("records_good", T.LongType(), False),
        T.StructField("records_quarantined", T.LongType(), False),
        T.StructField("duplicates", T.LongType(), False),
        T.StructField("quarantine_rate", T.DoubleType(), False),
        T.StructField("duplicate_rate", T.DoubleType(), False),
        T.StructField("missing_rate", T.MapType(T.StringType(), T.DoubleType()), False),
        T.StructField("reason_counts", T.MapType(T.StringType(), T.LongType()), False),
        T.StructField("rule_counts", T.MapType(T.StringType(), T.LongType()), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("violations", T.ArrayType(T.StringType()), False),
        T.StructField("warnings", T.ArrayType(T.StringType()), False),
        T.StructField("unknown_fields", T.MapType(T.StringType(), T.LongType()), True),
    ]
)

DRIFT_SCHEMA = T.StructType([
    T.StructField("window_start", T.TimestampType(), False),
    T.StructField("window_end", T.TimestampType(), False),
    T.StructField("feature", T.StringType(), False),
    T.StructField("kind", T.StringType(), False),
    T.StructField("statistic", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("p_value", T.DoubleType(), True),
    T.StructField("p_adjusted", T.DoubleType(), True),
    T.StructField("threshold", T.DoubleType(), True),
    T.StructField("drifted", T.BooleanType(), False),
    T.StructField("n_reference", T.LongType(), False),
    T.StructField("n_current", T.LongType(), False),
    T.StructField("computed_at", T.TimestampType(), False),
])

QUALITY_SCHEMA = T.StructType([
    T.StructField("window_start", T.TimestampType(), False),
    T.StructField("window_end", T.TimestampType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("column", T.StringType(), True),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("threshold", T.DoubleType(), True),
    T.StructField("breached", T.BooleanType(), False),
    T.StructField("computed_at", T.TimestampType(), False),
])

PERFORMANCE_SCHEMA = T.StructType([
    T.StructField("window_start", T.TimestampType(), False),
    T.StructField("window_end", T.TimestampType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("n", T.LongType(), False),
    T.StructField("threshold", T.DoubleType(), True),
    T.StructField("breached", T.BooleanType(), False),
    T.StructField("computed_at", T.TimestampType(), False),
])

# Partial counts of one micro-batch; summed per key when a window closes.
COUNT_SCHEMA = T.StructType([
    T.StructField("window_start", T.TimestampType(), False),
    T.StructField("window_end", T.TimestampType(), False),
    T.StructField("kind", T.StringType(), False),
    T.StructField("feature", T.StringType(), False),
    T.StructField("bucket", T.StringType(), False),
    T.StructField("n", T.LongType(), False),
    T.StructField("total", T.DoubleType(), True),
    T.StructField("low", T.DoubleType(), True),
    T.StructField("high", T.DoubleType(), True),
    T.StructField("newest", T.TimestampType(), True),
])

STATE_SCHEMA = T.StructType([*COUNT_SCHEMA.fields, T.StructField("batch_id", T.LongType(), False)])

AUDIT_SCHEMA = T.StructType([
    T.StructField("event_time", T.TimestampType(), False),
    T.StructField("action", T.StringType(), False),
    T.StructField("model_name", T.StringType(), False),
    T.StructField("from_version", T.IntegerType(), True),
    T.StructField("to_version", T.IntegerType(), True),
    T.StructField("reason", T.StringType(), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("run_id", T.StringType(), True),
])

REASON_TYPE = T.StructType([
    T.StructField("source", T.StringType()),
    T.StructField("window_start", T.TimestampType()),
    T.StructField("window_end", T.TimestampType()),
    T.StructField("subject", T.StringType()),
    T.StructField("statistic", T.StringType()),
    T.StructField("value", T.DoubleType()),
    T.StructField("threshold", T.DoubleType()),
    T.StructField("p_adjusted", T.DoubleType()),
])

ALERTS_SCHEMA = T.StructType([
    T.StructField("alert_id", T.StringType(), False),
    T.StructField("usecase", T.StringType(), False),
    T.StructField("window_start", T.TimestampType(), False),
    T.StructField("window_end", T.TimestampType(), False),
    T.StructField("bad_windows", T.IntegerType(), False),
    T.StructField("windows", T.IntegerType(), False),
    T.StructField("n", T.IntegerType(), False),
    T.StructField("m", T.IntegerType(), False),
    T.StructField("cooldown_windows", T.IntegerType(), False),
    T.StructField("retrain", T.BooleanType(), False),
    T.StructField("reasons", T.ArrayType(REASON_TYPE), False),
    T.StructField("topic", T.StringType(), False),
    T.StructField("created_at", T.TimestampType(), False),
])

QUERY_METRICS_SCHEMA = T.StructType([
    T.StructField("query_name", T.StringType(), True),
    T.StructField("query_id", T.StringType(), False),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("batch_id", T.LongType(), False),
    T.StructField("timestamp", T.TimestampType(), False),
    T.StructField("num_input_rows", T.LongType(), True),
    T.StructField("input_rows_per_second", T.DoubleType(), True),
    T.StructField("processed_rows_per_second", T.DoubleType(), True),
    T.StructField("batch_duration_ms", T.LongType(), True),
    T.StructField("state_rows_total", T.LongType(), True),
    T.StructField("rows_dropped_by_watermark", T.LongType(), True),
    T.StructField("event_time_max", T.TimestampType(), True),
    T.StructField("watermark", T.TimestampType(), True),
    T.StructField("event_to_output_latency_ms", T.LongType(), True),
    T.StructField("spark_jobs", T.LongType(), True),
    T.StructField("spark_stages", T.LongType(), True),
    T.StructField("app_name", T.StringType(), True),
    T.StructField("recorded_at", T.TimestampType(), False),
])

# One row per model and progressive-delivery evaluation (driftline.delivery): the stage, both
# models' metric on the same labelled events, the test's outcome and what the step did.
DELIVERY_SCHEMA = T.StructType([
    T.StructField("evaluated_at", T.TimestampType(), False),
    T.StructField("stage", T.StringType(), False),           # shadow | canary
    T.StructField("share", T.DoubleType(), False),           # canary share (0 in shadow)
    T.StructField("stage_start", T.TimestampType(), True),
    T.StructField("model", T.StringType(), False),           # champion | challenger
    T.StructField("model_version", T.IntegerType(), False),
    T.StructField("routes", T.StringType(), True),           # the prediction routes its rows came from
    T.StructField("rows", T.LongType(), False),              # predictions since the stage start
    T.StructField("null_rate", T.DoubleType(), True),
    T.StructField("n", T.LongType(), False),                 # labelled events both models scored
    T.StructField("positives", T.LongType(), True),
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),            # on every labelled event of the stage
    T.StructField("test", T.StringType(), False),
    T.StructField("look", T.IntegerType(), False),
    T.StructField("test_n", T.LongType(), False),            # events of the look the test used
    T.StructField("difference", T.DoubleType(), True),       # challenger - champion
    T.StructField("se", T.DoubleType(), True),
    T.StructField("bound", T.DoubleType(), True),
    T.StructField("p_value", T.DoubleType(), True),
    T.StructField("alpha", T.DoubleType(), False),
    T.StructField("margin", T.DoubleType(), False),
    T.StructField("verdict", T.StringType(), True),
    T.StructField("action", T.StringType(), False),          # hold | advance | promote | retire
    T.StructField("reason", T.StringType(), False),
])

QUERY_METRICS_COLUMNS = tuple(QUERY_METRICS_SCHEMA.fieldNames())
AUDIT_COLUMNS = tuple(AUDIT_SCHEMA.fieldNames())

# --------------------------------------------------------------------------- tables

MONITOR_SOURCES = ("events", "predictions", "performance")
TOPICS: dict[str, str] = {
    "events": "JSON events, keyed by entity (producers: the simulator or yours)",
    "labels": "JSON labels `{<event_id>, <label field>, label_time}`, arriving later",
    "predictions": "served predictions, keyed by event id (at least once)",
    "alerts": "drift alerts of the N-of-M rule, keyed by alert id",
    "dlq": "bad events with reason, topic, partition and offset",
}


@dataclass(frozen=True)
class Table:
    """One Delta table: ``<lake_root>/<layer>/<name>``, where ``{uc}`` in ``name`` is the use case."""

    key: str
    layer: str
    name: str
    description: str
    schema: T.StructType | None = None
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    writer: str = ""

    @property
    def per_usecase(self) -> bool:
        return "{uc}" in self.name

    def table_name(self, uc: str | None = None) -> str:
        if self.per_usecase and not uc:
            raise ConfigError(f"catalog: table {self.key!r} belongs to a use case; pass one")
        return self.name.format(uc=uc)

    def path(self, platform: PlatformConfig, uc: UseCaseConfig | str | None = None) -> str:
        return platform.table_path(self.layer, self.table_name(_uc_name(uc)))


def _uc_name(uc: UseCaseConfig | str | None) -> str | None:
    return uc if uc is None or isinstance(uc, str) else uc.name


def _tables(*tables: Table) -> dict[str, Table]:
    return {t.key: t for t in tables}


TABLES: dict[str, Table] = _tables(
    Table("bronze_events", "bronze", "{uc}_events", "raw event records with topic, partition, offset",
          BRONZE_SCHEMA, SOURCE_KEYS, writer="pipelines.ingest"),
    Table("bronze_labels", "bronze", "{uc}_labels", "raw label records with topic, partition, offset",
          BRONZE_SCHEMA, SOURCE_KEYS, writer="pipelines.ingest"),
    Table("quarantine_events", "quarantine", "{uc}_events", "bad event records, reasons, source coordinates",
          keys=SOURCE_KEYS, writer="pipelines.validate"),
    Table("quarantine_labels", "quarantine", "{uc}_labels", "bad label records, reasons, source coordinates",
          keys=SOURCE_KEYS, writer="pipelines.validate"),
    Table("quarantine_events_stream", "quarantine", "{uc}_events_stream",
          "bad events seen by the scoring query, with source coordinates", keys=SOURCE_KEYS,
          writer="pipelines.score"),
    Table("silver_events", "silver", "{uc}_events", "typed, valid, deduplicated events",
          keys=("<event_id>",), writer="pipelines.validate"),
    Table("silver_labels", "silver", "{uc}_labels", "typed, valid labels with their arrival time",
          keys=("<event_id>",), writer="pipelines.validate"),
    Table("features_offline", "gold", "{uc}_features_offline",
          "labelled events with point-in-time features (training data)", keys=("<event_id>",),
          writer="pipelines.build_features"),
    Table("features_online", "gold", "{uc}_features_online", "latest aggregate values per entity (MERGE)",
          keys=("<entity>",), writer="pipelines.build_features"),
    Table("features_stream", "gold", "{uc}_features_stream", "each scored event with the features it was served with (written, never read, by the query)",
          keys=("<event_id>",), writer="pipelines.score"),
    Table("predictions", "predictions", "{uc}", "online predictions, exactly once per batch id",
          PREDICTION_SCHEMA, ("event_id", "route"), writer="pipelines.score"),
    Table("predictions_batch", "predictions", "{uc}_batch", "batch predictions by batch date",
          keys=("<event_id>", "batch_date"), partition_by=("batch_date",), writer="pipelines.batch_score"),
    Table("validation", "monitoring", "{uc}_validation", "one quality report per validate run and dataset",
          REPORT_SCHEMA, ("run_id", "dataset"), writer="pipelines.validate"),
    Table("drift", "monitoring", "{uc}_drift", "drift statistics per window and feature", DRIFT_SCHEMA,
          ("window_start", "kind", "feature", "statistic"), writer="pipelines.monitor"),
    Table("quality", "monitoring", "{uc}_quality", "input and output quality per window", QUALITY_SCHEMA,
          ("window_start", "metric", "column"), writer="pipelines.monitor"),
    Table("performance", "monitoring", "{uc}_performance", "online performance per window once labels arrive",
          PERFORMANCE_SCHEMA, ("window_start", "metric"), writer="pipelines.monitor"),
    *(Table(f"monitor_state_{source}", "monitoring", f"{{uc}}_monitor_state_{source}",
            f"open windows' partial counts of the {source} monitor, and how far windows are final",
            STATE_SCHEMA,
            ("window_start", "window_end", "kind", "feature", "bucket", "batch_id"), writer="pipelines.monitor")
      for source in MONITOR_SOURCES),
    Table("alerts", "monitoring", "{uc}_alerts", "alerts raised by the N-of-M rule", ALERTS_SCHEMA,
          ("alert_id",), writer="alerts"),
    Table("delivery", "monitoring", "{uc}_delivery",
          "progressive delivery: each evaluation's stage, both models' metric on the same labelled events, "
          "the test's outcome and the step taken", DELIVERY_SCHEMA, ("evaluated_at", "model"), writer="delivery"),
    Table("queries", "monitoring", "queries", "progress of every streaming query batch", QUERY_METRICS_SCHEMA,
          ("query_id", "run_id", "batch_id"), writer="query_metrics"),
    Table("model_events", "audit", "{uc}_model_events", "registrations, promotions, rollbacks, routes, retrains",
          AUDIT_SCHEMA, writer="registry"),
    Table("smoke_events", "bronze", "smoke_events", "the smoke demo's raw records", BRONZE_SCHEMA,
          SOURCE_KEYS, writer="demo --smoke"),
)

# Streaming checkpoints under <checkpoint_root>.
CHECKPOINTS: dict[str, str] = {
    "score": "score/{uc}",
    "monitor": "monitor/{uc}/{source}",
    "kafka_to_delta": "kafka_to_delta/{topic}",
    "smoke": "smoke",
}


def table(key: str) -> Table:
    """The catalog entry ``key``; a :class:`ConfigError` lists the known ones."""
    try:
        return TABLES[key]
    except KeyError:
        raise ConfigError(f"catalog: no table {key!r}; expected one of {sorted(TABLES)}") from None


def path(platform: PlatformConfig, key: str, uc: UseCaseConfig | str | None = None) -> str:
    """The location of table ``key`` (of use case ``uc``) under the platform's lake root.

    Example::

        path(platform, "features_offline", uc)  # '/.../lake/gold/fraud_features_offline'
    """
    return table(key).path(platform, uc)


def checkpoint(platform: PlatformConfig, key: str, uc: UseCaseConfig | str | None = None, **parts: str) -> str:
    """The checkpoint location of streaming query ``key``, e.g. ``checkpoint(platform, "score", uc)``."""
    try:
        template = CHECKPOINTS[key]
    except KeyError:
        raise ConfigError(f"catalog: no checkpoint {key!r}; expected one of {sorted(CHECKPOINTS)}") from None
    return platform.checkpoint(template.format(uc=_uc_name(uc), **parts))


def usecase_tables(uc: str) -> list[tuple[str, str]]:
    """(layer, name) of every table of use case ``uc`` plus the shared ones, in catalog order."""
    return [(t.layer, t.table_name(uc)) for t in TABLES.values() if t.per_usecase or t.key == "queries"]


def identify(layer: str, name: str, usecases: Sequence[str] | None = None) -> tuple[str, str | None] | None:
    """Which catalog entry (and use case) ``<layer>/<name>`` is, or None when it is not catalogued.
    With ``usecases`` None any use-case name matches.

    Example::

        identify("gold", "fraud_features_online", ["fraud"])  # ('features_online', 'fraud')
    """
    # the most specific name first: "{uc}_batch" before "{uc}"
    for t in sorted(TABLES.values(), key=lambda t: -len(t.name)):
        if t.layer != layer:
            continue
        if not t.per_usecase:
            if t.name == name:
                return t.key, None
            continue
        pattern = re.escape(t.name).replace(re.escape("{uc}"), "(?P<uc>[A-Za-z0-9_.-]+?)")
        match = re.fullmatch(pattern, name)
        if match and (usecases is None or match["uc"] in usecases):
            return t.key, match["uc"]
    return None


def markdown() -> str:
    """The catalog as Markdown tables (tables, checkpoints, topics), as docs/architecture.md shows it.

    Example::

        print(markdown())   # python -m driftline.catalog
    """
    rows = ["| key | location | what it holds | keys | written by |", "|---|---|---|---|---|"]
    for t in TABLES.values():
        keys = ", ".join(f"`{k}`" for k in t.keys) or "-"
        rows.append(f"| `{t.key}` | `{t.layer}/{t.name.format(uc='<uc>')}` | {t.description} | {keys} | `{t.writer}` |")
    rows += ["", "| checkpoint | location |", "|---|---|"]
    rows += [f"| `{k}` | `<checkpoint_root>/{v.format(uc='<uc>', source='<source>', topic='<topic>')}` |"
             for k, v in CHECKPOINTS.items()]
    rows += ["", "| topic | what it carries |", "|---|---|"]
    rows += [f"| `<uc>.{k}` | {TOPICS[k]} |" for k in TOPICS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
