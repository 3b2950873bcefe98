"""Build a SparkSession wired for Delta Lake and the Kafka connector.

The jars come from the cache ``make setup`` fills (``.driftline/jars/spark``), so
building a session never touches the network. Like delta's
``configure_spark_with_delta_pip``, :func:`configure_builder` takes a builder and
returns it, so callers can keep composing::

    builder = configure_builder(SparkSession.builder.appName("ingest"), platform)
    spark = builder.getOrCreate()

The master is left to ``spark-submit``; ``local[*]`` is what runs when nothing
(neither ``spark.master`` in config, ``--master`` nor ``SPARK_MASTER``) set one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from driftline.config import PROJECT_ROOT, PlatformConfig
from driftline.errors import SetupError

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# FAIR scheduling between pools; jobs without a pool run FIFO in "default", as under FIFO mode.
# The loop runs its retrains in RETRAIN_POOL (weights in the file), beside its streaming queries.
POOLS_FILE = PROJECT_ROOT / "conf" / "spark" / "fairscheduler.xml"
RETRAIN_POOL = "retrain"
# Spark's default redaction (secret, password, token, access keys), ADLS account keys and JAAS
# settings (``kafka.sasl.jaas.config`` holds the SASL login); matched against keys and values
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|account[.]key|jaas"


# Optional jar directories under jars_dir, added when bin/fetch-jars has filled them:
# object-store holds the S3A connector (hadoop-aws and the AWS SDK modules) for s3a:// lakes.
OPTIONAL_JAR_DIRS = ("object-store",)


def spark_jars(platform: PlatformConfig) -> list[str]:
    """The connector jars resolved by ``make setup`` (Delta, Kafka, and the S3A connector
    when present); raises if setup has not run."""
    root = Path(platform.path(platform.jars_dir))
    jar_dir = root / "spark"
    jars = sorted(str(p) for p in jar_dir.glob("*.jar"))
    if not any("delta-spark" in j for j in jars) or not any("spark-sql-kafka" in j for j in jars):
        raise SetupError(
            f"Delta and Kafka connector jars not found in {jar_dir}: run `make setup` "
            "(bin/fetch-jars) once with network access"
        )
    for name in OPTIONAL_JAR_DIRS:
        jars += sorted(str(p) for p in (root / name).glob("*.jar"))
    s3a = [v for v in (platform.lake_root, platform.checkpoint_root) if v.startswith("s3a://")]
    if s3a and not any("hadoop-aws" in j for j in jars):
        raise SetupError(
            f"{s3a[0]} needs the S3A connector (hadoop-aws) in {root / 'object-store'}: run `make setup` "
            "(bin/fetch-jars) once with network access"
        )
    return jars


def configure_builder(
    builder: SparkSession.Builder, platform: PlatformConfig, *, testing: bool = False
) -> SparkSession.Builder:
    """Add Delta, the Kafka connector and driftline's defaults to ``builder``."""
    if not isinstance(builder, SparkSession.Builder):
        raise TypeError(f"builder: expected SparkSession.Builder, got {type(builder).__name__}")
    spark = platform.spark
    builder = (
        builder.config("spark.jars", ",".join(spark_jars(platform)))
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.shuffle.partitions", str(spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", spark.driver_memory)
        .config("spark.ui.enabled", str(spark.ui_enabled and not testing).lower())
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # timestamps as Parquet INT64 microseconds, not INT96 (read as nanoseconds, which end in 2262):
        # a far-future event time (valid, e.g. 9999-12-31) leaves every table readable by delta-rs
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        # state of streaming queries: RocksDB (transformWithState needs it), changelog checkpointing
        # so a micro-batch uploads only what changed; a query keeps the provider it started with
        .config("spark.sql.streaming.stateStore.providerClass", ROCKSDB_PROVIDER)
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        # Spark's default redaction, plus ADLS account keys (fs.azure.account.key.<account>...) and JAAS settings
        .config("spark.redaction.regex", REDACTION_REGEX)
    )
    if POOLS_FILE.is_file():  # absent from a bare package install: one FIFO queue, as Spark's default
        builder = builder.config("spark.scheduler.mode", "FAIR").config(
            "spark.scheduler.allocation.file", POOLS_FILE.as_uri())
    if testing:
        builder = (
            builder.config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.adaptive.coalescePartitions.initialPartitionNum", "2")
            .config("spark.default.parallelism", "2")
        )
    for key, value in spark.conf.items():
        builder = builder.config(key, value)
    # Under spark-submit the master is already a JVM system property, and a plain
    # `python job.py` goes through pyspark's own spark-submit, whose default is
    # local[*]: so set one only when asked to, and never override --master.
    master = spark.master or os.environ.get("SPARK_MASTER")
    if master and "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master)
    return builder


def build_session(
    platform: PlatformConfig, app_name: str | None = None, *, testing: bool = False
) -> SparkSession:
    """Get or create the driftline SparkSession.

    Example::

        spark = build_session(load_platform(), app_name="driftline-ingest")
    """
    # A local driver on a host whose name resolves to loopback otherwise picks
    # some other interface; the user's environment wins.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers must see the same packages (numpy, pandas) as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or platform.spark.app_name)
    session = configure_builder(builder, platform, testing=testing).getOrCreate()
    session.sparkContext.setLogLevel(platform.spark.log_level)
    return session
