"""Batch readers and idempotent writers over Kafka, JSON-lines files and Delta.

Bronze records share one shape whatever their source (:data:`BRONZE_COLUMNS`):
the raw value as text plus the coordinates it came from, so every later
stage can point back at the exact Kafka record or file line::

    raw = read_kafka_batch(spark, platform.kafka, "fraud.events")
    merge_new_rows(spark, bronze_records(raw), path, keys=SOURCE_KEYS, metadata=lineage.to_json())

Idempotence comes in three forms, one per kind of table:

- bronze: :func:`merge_new_rows`, an insert-only MERGE on the source
  coordinates ``(topic, partition, offset)``: a re-read range adds nothing;
- rebuilt tables (silver, gold offline): :func:`write_delta` with ``overwrite``,
  optionally with a ``txnAppId``/``txnVersion`` pair so Delta skips a repeat;
- latest-value tables (gold online): :func:`upsert_delta`, a MERGE on the key.

Every commit can carry :class:`Lineage` as its ``userMetadata``: input tables
with the versions read and the configuration hashes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from driftline.config import KafkaConfig, PlatformConfig, UseCaseConfig, config_hash
from driftline.errors import DriftlineError

log = logging.getLogger(__name__)

BRONZE_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "ingest_time")
SOURCE_KEYS = ("topic", "partition", "offset")
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"

OffsetSpec = str | Mapping[int, int]


class MissingTableError(DriftlineError, RuntimeError):
    """An input Delta table a job needs does not exist yet."""


# --------------------------------------------------------------------------- Kafka


def offsets_json(topic: str, offsets: OffsetSpec) -> str:
    """Spark's ``startingOffsets``/``endingOffsets`` value for one topic.

    ``"earliest"``/``"latest"`` and JSON strings pass through; a mapping of
    partition → offset becomes ``{"<topic>": {"<partition>": offset}}``
    (``-2`` means earliest, ``-1`` latest)::

        offsets_json("fraud.events", {0: 10, 1: -2})  # '{"fraud.events": {"0": 10, "1": -2}}'
    """
    if isinstance(offsets, str):
        if not offsets.strip():
            raise ValueError("offsets: expected 'earliest', 'latest', a JSON string or a partition->offset mapping")
        return offsets
    if not offsets:
        raise ValueError("offsets: the partition->offset mapping is empty")
    return json.dumps({topic: {str(p): int(o) for p, o in sorted(offsets.items())}})


def read_kafka_batch(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: OffsetSpec = "earliest",
    ending_offsets: OffsetSpec = "latest",
) -> DataFrame:
    """A batch DataFrame over an offset range of ``topic`` (Spark's Kafka source columns).

    Example::

        df = read_kafka_batch(spark, platform.kafka, "fraud.events", {0: 100, 1: 80}, "latest")
    """
    if not topic:
        raise ValueError("topic: expected a topic name")
    return (
        spark.read.format("kafka")
        .options(**kafka.client_options("spark"))
        .option("subscribe", topic)
        .option("startingOffsets", offsets_json(topic, starting_offsets))
        .option("endingOffsets", offsets_json(topic, ending_offsets))
        .option("failOnDataLoss", "false")
        .load()
    )


def kafka_watermarks(kafka: KafkaConfig, topic: str, timeout_s: float = 30.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` offsets of ``topic`` right now (high = next offset to be written).

    Resolving the end of a range once, before reading, makes a batch read
    repeatable: two actions over the same DataFrame see the same records.

    Example::

        kafka_watermarks(platform.kafka, "fraud.events")  # {0: (0, 120), 1: (0, 98)}
    """
    from confluent_kafka import TopicPartition

    from driftline.errors import BrokerError
    from driftline.kafka_io import make_consumer

    if not topic:
        raise ValueError("topic: expected a topic name")
    consumer = make_consumer(kafka, group_id="driftline-offsets")
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerError(f"topic {topic!r} does not exist on {kafka.bootstrap}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def bronze_records(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows as bronze records: key and value as text plus source coordinates.

    Example::

        bronze_records(read_kafka_batch(spark, platform.kafka, "eta.events"))
    """
    return kafka_df.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def read_jsonl_records(spark: SparkSession, path: str) -> DataFrame:
    """The lines of JSON-lines file(s) at ``path`` as bronze records.

    The file path stands in for the topic, partition is 0 and the offset is
    the 1-based line number, so a file re-read maps onto the same coordinates::

        read_jsonl_records(spark, "out/sim/events.jsonl")
    """
    if not path:
        raise ValueError("path: expected a file or directory of JSON-lines files")
    lines = spark.read.format("text").load(path).select(
        F.col("value"),
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        # Rows keep file order inside a split; splits are ordered by their start.
        F.monotonically_increasing_id().alias("read_order"),
    )
    in_file_order = Window.partitionBy("file_path").orderBy("block_start", "read_order")
    return lines.select(
        F.lit(None).cast("string").alias("key"),
        F.col("value"),
        F.col("file_path").alias("topic"),
        F.lit(0).alias("partition"),
        F.row_number().over(in_file_order).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def next_offsets(bronze: DataFrame, topic: str) -> dict[int, int]:
    """``{partition: max(offset) + 1}`` of ``topic``'s records already in ``bronze``.

    Example::

        next_offsets(read_delta(spark, bronze_path), "fraud.events")  # {0: 120, 1: 98}
    """
    rows = (
        bronze.where(F.col("topic") == F.lit(topic))
        .groupBy("partition")
        .agg((F.max("offset") + 1).alias("next"))
        .collect()
    )
    return {int(r["partition"]): int(r["next"]) for r in rows}


# --------------------------------------------------------------------------- Delta


def is_delta_table(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table (``is_delta_table(spark, "/lake/bronze/fraud_events")``)."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def delta_version(spark: SparkSession, path: str) -> int | None:
    """The latest version of the Delta table at ``path``, or None when there is none.

    Example::

        delta_version(spark, platform.table_path("bronze", "fraud_events"))  # 3
    """
    from delta.tables import DeltaTable

    if not is_delta_table(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return None if row is None else int(row["version"])


def require_version(spark: SparkSession, path: str, hint: str) -> int:
    """The latest version of the table at ``path``; :class:`MissingTableError` saying ``hint`` when absent.

    Example::

        require_version(spark, bronze, "run jobs/ingest.py first")
    """
    version = delta_version(spark, path)
    if version is None:
        raise MissingTableError(f"no Delta table at {path}: {hint}")
    return version


def read_delta(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The Delta table at ``path``, as of ``version`` when given (time travel).

    Example::

        read_delta(spark, path, version=delta_version(spark, path))
    """
    reader = spark.read.format("delta")
    if version is not None:
        if version < 0:
            raise ValueError(f"version: expected a non-negative table version, got {version}")
        reader = reader.option("versionAsOf", str(version))
    return reader.load(path)


def commit_user_metadata(spark: SparkSession, path: str, version: int | None = None) -> str | None:
    """The ``userMetadata`` of one commit (the latest when ``version`` is None), None without a table.

    Example::

        json.loads(commit_user_metadata(spark, silver_path))["inputs"]
    """
    from delta.tables import DeltaTable

    if not is_delta_table(spark, path):
        return None
    table = DeltaTable.forPath(spark, path)
    history = table.history(1) if version is None else table.history().where(F.col("version") == version)
    row = history.select("userMetadata").first()
    return None if row is None else row["userMetadata"]


@contextlib.contextmanager
def commit_metadata(spark: SparkSession, metadata: str | None) -> Iterator[None]:
    """Attach ``metadata`` to every Delta commit made inside the block (e.g. a MERGE,
    which has no writer options); the previous session value is restored after."""
    if metadata is None:
        yield
        return
    previous = spark.conf.get(USER_METADATA_CONF, None)
    spark.conf.set(USER_METADATA_CONF, metadata)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(USER_METADATA_CONF)
        else:
            spark.conf.set(USER_METADATA_CONF, previous)


def write_delta(
    df: DataFrame,
    path: str,
    *,
    mode: str = "overwrite",
    metadata: str | None = None,
    txn: tuple[str, int] | None = None,
    partition_by: Sequence[str] = (),
) -> None:
    """Write ``df`` to the Delta table at ``path`` in one commit.

    ``txn=(app_id, version)`` makes the write idempotent: Delta skips it when
    a commit with that app id and a version at least as high already exists.
    ``overwrite`` also replaces the schema, so a rebuilt table follows its code.

    Example::

        write_delta(silver, path, metadata=lineage.to_json(), txn=("validate:fraud", bronze_version))
    """
    if mode not in {"overwrite", "append"}:
        raise ValueError(f"mode: expected 'overwrite' or 'append', got {mode!r}")
    writer = df.write.format("delta").mode(mode)
    if mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    if metadata is not None:
        writer = writer.option("userMetadata", metadata)
    if txn is not None:
        app_id, version = txn
        if not app_id or version < 0:
            raise ValueError(f"txn: expected (non-empty app id, version >= 0), got {txn!r}")
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(version))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def _key_condition(keys: Sequence[str]) -> str:
    if not keys:
        raise ValueError("keys: expected at least one key column")
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)


def merge_new_rows(
    spark: SparkSession, df: DataFrame, path: str, keys: Sequence[str], *, metadata: str | None = None
) -> int:
    """Insert the rows of ``df`` whose ``keys`` are not in the table yet; return how many were inserted.

    Creates the table on first use. Re-running with the same rows adds nothing
    (and makes no commit). Example::

        merge_new_rows(spark, bronze_records(raw), path, keys=SOURCE_KEYS, metadata=meta)
    """
    from delta.tables import DeltaTable

    condition = _key_condition(keys)
    before = delta_version(spark, path)
    if before is None:
        write_delta(df, path, mode="append", metadata=metadata)
    else:
        with commit_metadata(spark, metadata):
            DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), condition).whenNotMatchedInsertAll().execute()
    return _rows_written(spark, path, before, "numTargetRowsInserted")


def upsert_delta(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    keys: Sequence[str],
    *,
    metadata: str | None = None,
    newer_than: str | None = None,
) -> int:
    """MERGE ``df`` into the table at ``path`` by ``keys``: update changed rows, insert new ones.

    A matched row is only rewritten when some column differs (so a repeat
    makes no change) and, with ``newer_than=<column>``, when the incoming row
    is not older than the stored one. Returns the number of rows inserted or updated.

    Example::

        upsert_delta(spark, latest, path, keys=["customer_id"], newer_than="as_of")
    """
    from delta.tables import DeltaTable

    condition = _key_condition(keys)
    before = delta_version(spark, path)
    if before is None:
        write_delta(df, path, mode="append", metadata=metadata)
        return _rows_written(spark, path, before, "numTargetRowsInserted")
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in df.columns if c not in keys)
    update_when = f"({changed})" if changed else "false"
    if newer_than:
        update_when = f"s.`{newer_than}` >= t.`{newer_than}` AND {update_when}"
    with commit_metadata(spark, metadata):
        (
            DeltaTable.forPath(spark, path).alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll(condition=update_when)
            .whenNotMatchedInsertAll()
            .execute()
        )
    return _rows_written(spark, path, before, "numTargetRowsInserted", "numTargetRowsUpdated")


def _rows_written(spark: SparkSession, path: str, before: int | None, *metrics: str) -> int:
    """Rows the latest commit wrote, if it is newer than ``before`` (0 when no commit was made)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("version", "operationMetrics").first()
    if row is None or (before is not None and int(row["version"]) == before):
        return 0
    got = dict(row["operationMetrics"] or {})
    if before is None:
        return int(got.get("numOutputRows", 0))
    return sum(int(got.get(m, 0)) for m in metrics)


# --------------------------------------------------------------------------- lineage


@dataclass(frozen=True)
class Lineage:
    """What a commit was computed from, stored as the commit's ``userMetadata`` JSON.

    ``inputs`` lists ``{"path": ..., "version": ...}`` for Delta inputs or
    ``{"topic": ..., "offsets": {...}}`` / ``{"file": ...}`` for raw sources.

    Example::

        lin = Lineage.for_job("validate", platform, usecase, run_id,
                              inputs=[{"path": bronze, "version": 3}])
        write_delta(silver, path, metadata=lin.to_json())
    """

    job: str
    usecase: str
    run_id: str
    platform_digest: str
    usecase_digest: str
    inputs: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        """One hash over both configuration digests."""
        return config_hash({"platform": self.platform_digest, "usecase": self.usecase_digest})

    @classmethod
    def for_job(
        cls,
        job: str,
        platform: PlatformConfig,
        usecase: UseCaseConfig,
        run_id: str,
        inputs: Sequence[Mapping[str, Any]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Lineage:
        return cls(
            job=job,
            usecase=usecase.name,
            run_id=run_id,
            platform_digest=platform.digest(),
            usecase_digest=usecase.digest(),
            inputs=tuple(dict(i) for i in inputs),
            extra=dict(extra or {}),
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["inputs"] = [dict(i) for i in self.inputs]
        data["config_hash"] = self.config_hash
        return json.dumps(data, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        data = json.loads(text)
        data.pop("config_hash", None)
        data["inputs"] = tuple(data.get("inputs", ()))
        return cls(**data)

    def same_computation(self, other: Lineage | None) -> bool:
        """True when ``other`` read the same inputs with the same parameters (``extra``) and configuration."""
        return (
            other is not None
            and self.job == other.job
            and self.config_hash == other.config_hash
            and [dict(i) for i in self.inputs] == [dict(i) for i in other.inputs]
            and dict(self.extra) == dict(other.extra)
        )


def table_input(path: str, version: int | None) -> dict[str, Any]:
    """A lineage input entry for a Delta table read at ``version``."""
    return {"path": path, "version": version}


def read_lineage(spark: SparkSession, path: str, version: int | None = None) -> Lineage | None:
    """The :class:`Lineage` of a commit (the latest by default), or None when it has none.

    Example::

        read_lineage(spark, platform.table_path("silver", "fraud_events")).inputs
    """
    text = commit_user_metadata(spark, path, version)
    if not text:
        return None
    try:
        return Lineage.from_json(text)
    except (ValueError, TypeError):
        log.warning("commit metadata of %s is not driftline lineage: %.80s", path, text)
        return None


def up_to_date(spark: SparkSession, path: str, lineage: Lineage) -> bool:
    """True when the latest commit of ``path`` was computed from the same inputs and config."""
    return lineage.same_computation(read_lineage(spark, path))
