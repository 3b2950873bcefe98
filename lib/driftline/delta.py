"""The one way into Delta Lake: Spark-side reads and idempotent writes, and a
Spark-free reader (delta-rs, ``deltalake``) beside them.

Spark side (a :class:`~pyspark.sql.SparkSession`, delta-spark)::

    is_delta_table(spark, path)                     # is there a table?
    delta_version(spark, path)                      # its latest version, or None
    require_version(spark, path, "run jobs/ingest.py first")   # ... or MissingTableError
    read_delta(spark, path, version=3)              # time travel
    commit_user_metadata(spark, path)               # the latest commit's userMetadata

Idempotence comes in four forms, one per kind of table:

- insert-only (bronze, alerts): :func:`merge_new_rows`, a MERGE on source
  coordinates or ids: a re-read range adds nothing;
- rebuilt tables (silver, gold offline) and appends: :func:`write_delta`,
  optionally with a ``txnAppId``/``txnVersion`` pair so Delta skips a repeat;
- latest-value tables (gold online): :func:`upsert_delta`, a MERGE on the key
  that only rewrites changed rows;
- tables several streaming queries MERGE into at once (monitoring):
  :func:`merge_with_retry`, a null-safe MERGE retried on concurrent-modification
  conflicts (:func:`retry_concurrent`), and :func:`delete_rows`.

Spark-free (notebooks, CLI listings, the demo's counts): :func:`local_table`,
:func:`read_local`, :func:`count_local`, :func:`rows_local`, :func:`local_version`;
each returns ``None`` (or nothing) when there is no table at the path. Despite the
name, the path may be in an object store (``s3a://``, ``abfss://``, ``hdfs://``):
credentials come from the environment, as for Spark (:func:`storage_options`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from driftline.errors import MissingTableError, UsageError

if TYPE_CHECKING:
    import deltalake
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import Column

log = logging.getLogger(__name__)

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


# --------------------------------------------------------------------------- reading (Spark)


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


def latest_version(spark: SparkSession, path: str) -> int | None:
    """The newest committed version of the table at ``path`` from a listing of its
    ``_delta_log`` (any Hadoop file system), without running a Spark job: for hot paths
    such as a streaming micro-batch. None when there is no table.

    Example::

        latest_version(spark, catalog.path(platform, "features_online", uc))  # 12
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log_dir = jvm.org.apache.hadoop.fs.Path(path.rstrip("/") + "/_delta_log")
    fs = log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    if not fs.exists(log_dir):
        return None
    versions = [int(name[:-5]) for name in (str(st.getPath().getName()) for st in fs.listStatus(log_dir))
                if name.endswith(".json") and name[:-5].isdigit()]
    return max(versions) if versions else None


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
            raise UsageError(f"version: expected a non-negative table version, got {version}")
        reader = reader.option("versionAsOf", str(version))
    return reader.load(path)


def read_if_exists(spark: SparkSession, path: str) -> DataFrame | None:
    """The latest version of the Delta table at ``path``, or None when there is no table.

    Example::

        recent = read_if_exists(spark, features_stream_path(platform, uc))
    """
    return read_delta(spark, path) if is_delta_table(spark, path) else None


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


# --------------------------------------------------------------------------- writing (Spark)


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
    replace_where: str | None = None,
    merge_schema: bool = False,
) -> None:
    """Write ``df`` to the Delta table at ``path`` in one commit.

    ``merge_schema`` lets an append add new columns (a table written by an older version).

    ``txn=(app_id, version)`` makes the write idempotent: Delta skips it when
    a commit with that app id and a version at least as high already exists.
    ``overwrite`` also replaces the schema, so a rebuilt table follows its code;
    with ``replace_where`` it replaces only the rows matching that predicate
    (one partition, say) and keeps the schema.

    Example::

        write_delta(silver, path, metadata=lineage.to_json(), txn=("validate:fraud", bronze_version))
        write_delta(preds, path, partition_by=["batch_date"], replace_where="batch_date = '2024-05-01'")
    """
    if mode not in {"overwrite", "append"}:
        raise UsageError(f"mode: expected 'overwrite' or 'append', got {mode!r}")
    writer = df.write.format("delta").mode(mode)
    if replace_where is not None:
        if mode != "overwrite":
            raise UsageError(f"replace_where: only with mode 'overwrite', got mode {mode!r}")
        writer = writer.option("replaceWhere", replace_where)
    elif mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    if metadata is not None:
        writer = writer.option("userMetadata", metadata)
    if txn is not None:
        app_id, version = txn
        if not app_id or version < 0:
            raise UsageError(f"txn: expected (non-empty app id, version >= 0), got {txn!r}")
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(version))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def _key_condition(keys: Sequence[str], *, null_safe: bool = False) -> str:
    if not keys:
        raise UsageError("keys: expected at least one key column")
    op = "<=>" if null_safe else "="
    return " AND ".join(f"t.`{k}` {op} s.`{k}`" for k in keys)


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


# --------------------------------------------------------------------------- concurrent writers (Spark)


def concurrent_errors() -> tuple[type[BaseException], ...]:
    """The delta-spark exceptions raised when another writer committed first (worth a retry)."""
    from delta import exceptions as dx

    return (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException, dx.MetadataChangedException,
            dx.ProtocolChangedException, dx.ConcurrentAppendException, dx.ConcurrentDeleteReadException,
            dx.ConcurrentDeleteDeleteException, dx.ConcurrentTransactionException)


def retry_concurrent(action: Callable[[], None], what: str, attempts: int = 8) -> None:
    """Run a Delta write, retrying (with a short randomised back-off) when another
    writer committed first; the last attempt's conflict propagates.

    Example::

        retry_concurrent(lambda: DeltaTable.forPath(spark, path).delete("n = 0"), f"prune {path}")
    """
    if attempts < 1:
        raise UsageError(f"attempts: expected at least 1, got {attempts}")
    errors = concurrent_errors()
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except errors as e:
            if attempt == attempts:
                raise
            log.info("%s: concurrent commit, retrying (%d/%d): %s", what, attempt, attempts, type(e).__name__)
            time.sleep(0.1 * attempt + 0.2 * random.random())


def merge_with_retry(spark: SparkSession, df: DataFrame, path: str, keys: Sequence[str], *, attempts: int = 8) -> None:
    """MERGE ``df`` into the table at ``path`` on ``keys`` (null-safe ``<=>``): matched rows
    are replaced, new ones inserted, so a replay rewrites the same rows instead of adding
    copies. The first write creates the table; a concurrent creator makes it fail and retry
    as a MERGE. Conflicts with other writers are retried (:func:`retry_concurrent`).

    Example::

        merge_with_retry(spark, df, paths["drift"], ["window_start", "window_end", "feature", "statistic"])
    """
    from delta.tables import DeltaTable

    condition = _key_condition(keys, null_safe=True)

    def run() -> None:
        if not is_delta_table(spark, path):
            df.write.format("delta").mode("append").save(path)
            return
        (DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), condition)
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())

    retry_concurrent(run, f"merge into {path}", attempts)


def delete_rows(spark: SparkSession, path: str, condition: Column | str, *, attempts: int = 8) -> None:
    """Delete the rows of the table at ``path`` matching ``condition``, retrying on conflicts.

    Example::

        delete_rows(spark, state, F.col("window_end") <= F.lit(watermark))
    """
    from delta.tables import DeltaTable

    retry_concurrent(lambda: DeltaTable.forPath(spark, path).delete(condition), f"delete from {path}", attempts)


# --------------------------------------------------------------------------- Spark-free (delta-rs)


def storage_options(path: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What delta-rs needs beside the environment to open ``path``; never credentials.

    delta-rs reads the same variables as Spark's S3A (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``;
    ``AZURE_STORAGE_ACCOUNT_NAME``/``_KEY`` for ``abfss://``) from the environment itself,
    and takes ``s3a://`` as ``s3://``. Only a plain-HTTP endpoint (MinIO or moto on
    loopback) has to be allowed explicitly::

        storage_options("s3a://lake/bronze/fraud_events", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
        # {'AWS_ALLOW_HTTP': 'true'}
    """
    env = os.environ if env is None else env
    scheme = path.partition("://")[0].lower() if "://" in path else ""
    if scheme in ("s3", "s3a") and env.get("AWS_ENDPOINT_URL", "").lower().startswith("http://"):
        return {"AWS_ALLOW_HTTP": "true"}
    return {}


def local_table(path: str) -> deltalake.DeltaTable | None:
    """The delta-rs table at ``path`` (no Spark, no JVM), or None when there is no table there.
    A local path or any store delta-rs knows (``s3a://``, ``abfss://``, ``hdfs://``), with
    credentials from the environment (:func:`storage_options`).

    Example::

        table = local_table(platform.table_path("predictions", "fraud"))
        table.version() if table is not None else None
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    if not path:
        raise UsageError("path: expected a Delta table path, got an empty string")
    try:
        return DeltaTable(path, storage_options=storage_options(path) or None)
    except TableNotFoundError:
        return None


def read_local(
    path: str, columns: Sequence[str] | None = None, *, types_mapper: Callable[[Any], Any] | None = None
) -> pd.DataFrame | None:
    """The latest version of the table at ``path`` as a pandas frame (only ``columns`` when
    given; ``types_mapper`` as for :meth:`pyarrow.Table.to_pandas`), None when there is no table.

    Example::

        read_local(platform.table_path("monitoring", "fraud_drift"), ["feature", "value"])
    """
    table = local_table(path)
    if table is None:
        return None
    if not in_object_store(table):
        return table.to_pandas(columns=list(columns) if columns else None, types_mapper=types_mapper)
    return arrow_table(table, columns).to_pandas(types_mapper=types_mapper)


def count_local(path: str) -> int | None:
    """The number of rows of the table at ``path`` (from file statistics where it can), None without a table."""
    table = local_table(path)
    return None if table is None else rows_in(table)


def local_version(path: str) -> int | None:
    """The latest version of the table at ``path``, None without a table."""
    table = local_table(path)
    return None if table is None else int(table.version())


def rows_local(path: str) -> list[dict[str, Any]]:
    """Every row of the table at ``path`` as a dict (empty when there is no table): for small tables.

    Example::

        [r["alert_id"] for r in rows_local(monitoring_path(platform, uc, "alerts"))]
    """
    table = local_table(path)
    return [] if table is None else arrow_table(table).to_pylist()


def in_object_store(table: deltalake.DeltaTable) -> bool:
    """Whether a delta-rs ``table`` lives in an object store (not a ``file:`` URI)."""
    return not table.table_uri.startswith("file:")


def arrow_table(table: deltalake.DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of a delta-rs ``table`` as a pyarrow Table (only ``columns`` when given), typed
    as the table's schema says.

    A table in an object store (``s3a://``, ``abfss://``, ``hdfs://``) is read by delta-rs's
    own engine (DataFusion, :class:`deltalake.QueryBuilder`) rather than by a pyarrow dataset
    over delta-rs's file system: with the latter the interpreter aborts at exit about every
    other run, after the work is done ("terminate called without an active exception",
    exit code 134; delta-io/delta-rs#2184, apache/arrow#39162).
    """
    import pyarrow as pa

    if not in_object_store(table):
        return table.to_pyarrow_table(columns=list(columns) if columns else None)
    from deltalake import QueryBuilder

    schema = pa.schema(table.schema().to_arrow())
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    select = ", ".join('"' + name.replace('"', '""') + '"' for name in schema.names)
    result = QueryBuilder().register("t", table).execute(f"SELECT {select} FROM t").read_all()
    return pa.table(result).cast(schema)


def rows_in(table: deltalake.DeltaTable) -> int:
    """The number of rows of a delta-rs ``table`` (from file statistics where it can)."""
    import pyarrow as pa

    if not in_object_store(table):
        return int(table.to_pyarrow_dataset().count_rows())
    from deltalake import QueryBuilder

    result = QueryBuilder().register("t", table).execute("SELECT COUNT(*) AS n FROM t").read_all()
    return int(pa.table(result).column("n")[0].as_py())
