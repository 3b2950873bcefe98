"""Old versions of a training table stay readable while a registered model version needs them.

A registered version's run records the Delta table and version it was trained on (lineage
params ``data.path``/``data.version``); ``driftline promote`` and
:func:`driftline.registry.rebuild_test_set` read that version again to rebuild its test set.
Delta keeps an old version readable only while both its log (``delta.logRetentionDuration``;
log files are cleaned up at checkpoints) and its data files (``delta.deletedFileRetentionDuration``,
the horizon of ``VACUUM``; Delta 4 also refuses time travel beyond it) are kept. So the two
table properties of each training table follow the registry::

    keep_training_data(spark, platform, uc)          # at each registration: extend when the margin runs low
    vacuum(spark, platform, uc)                      # ``driftline vacuum``: set them exactly, then VACUUM

Each property is set to the age of the oldest table version a registered model version was
trained on, plus one hour, plus its floor ``model.retention.log`` / ``.deleted_files``; with no
registered version on the table, to the floor alone. ``VACUUM`` then runs with the table's own
``delta.deletedFileRetentionDuration``: it never removes a file the oldest referenced version
reads (that file was removed from the table after that version was committed, within the
retention), while files only older versions read go. Deleting a model version from the registry
releases its table version at the next ``driftline vacuum``. A plain Delta ``VACUUM`` run by
anyone else honours the same properties, so the data stays for at least the floor after each
refresh. The property change (and the VACUUM START/END commits Delta logs) are metadata-only
commits that carry the previous commit's ``userMetadata`` (its lineage), so the feature job
still sees the table as up to date.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline import catalog
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.durations import UNITS, WORDS
from driftline.delta import commit_metadata, commit_user_metadata, is_delta_table

log = logging.getLogger(__name__)

LOG_PROP = "delta.logRetentionDuration"
FILES_PROP = "delta.deletedFileRetentionDuration"
# Delta's own defaults when a table does not set the properties
DELTA_DEFAULTS = {LOG_PROP: 30 * 86400, FILES_PROP: 7 * 86400}
MARGIN_S = 3600  # what a version ages between the plan and VACUUM, and clock skew


@dataclass(frozen=True)
class TableRetention:
    """What one training table must keep: the versions registered model versions were trained on
    (``{table version: [model versions]}``), the oldest one's commit time, and the properties."""

    path: str
    referenced: dict[int, list[int]]
    oldest_time: datetime | None
    log_s: int
    deleted_files_s: int
    current: dict[str, int | None] = field(default_factory=dict)
    changed: bool = False
    missing: list[int] = field(default_factory=list)  # referenced versions no longer in the log

    @property
    def oldest_version(self) -> int | None:
        return min(self.referenced) if self.referenced else None


def interval_seconds(text: str | None) -> int | None:
    """Seconds of a Delta interval property (``interval 7 days``, ``interval 3600 seconds``,
    ``1 week``); None when absent or not understood.

        >>> interval_seconds("interval 1 week"), interval_seconds("interval 90 seconds")
        (604800, 90)
    """
    if not text:
        return None
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.lower().replace("interval", ""))
    if not parts:
        return None
    for num, unit in parts:
        if unit in ("week", "weeks"):
            total += float(num) * 7 * 86400
        elif WORDS.get(unit, unit) in UNITS:
            total += float(num) * UNITS[WORDS.get(unit, unit)]
        else:
            return None
    return int(total)


def referenced_versions(platform: PlatformConfig, uc: UseCaseConfig) -> dict[str, dict[int, list[int]]]:
    """``{table path: {table version: [model versions]}}`` over every registered version of
    ``<uc>-model`` whose run recorded ``data.path``/``data.version``."""
    from mlflow.exceptions import MlflowException

    from driftline.registry import client_for, model_name

    client = client_for(platform)
    out: dict[str, dict[int, list[int]]] = {}
    try:
        versions = client.search_model_versions(f"name='{model_name(uc)}'")
    except MlflowException:
        return out
    for mv in versions:
        if not mv.run_id:
            continue
        params = client.get_run(mv.run_id).data.params
        if "data.path" in params and "data.version" in params:
            out.setdefault(params["data.path"], {}).setdefault(int(params["data.version"]), []).append(int(mv.version))
    return out


def _properties(spark: SparkSession, path: str) -> dict[str, str]:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).detail().select("properties").first()
    return dict(row["properties"] or {}) if row else {}


def _commit_time(spark: SparkSession, path: str, version: int) -> datetime | None:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history().where(F.col("version") == version).select("timestamp").first()
    if row is None:
        return None
    ts: datetime = row["timestamp"]
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts  # the session time zone is UTC


def plan_table(spark: SparkSession, uc: UseCaseConfig, path: str, referenced: dict[int, list[int]],
               now: datetime | None = None) -> TableRetention:
    """The properties ``path`` needs for ``referenced`` versions under the use case's floors."""
    from driftline.training import model_spec

    spec = model_spec(uc).retention
    now = now or datetime.now(UTC)
    times = {v: _commit_time(spark, path, v) for v in sorted(referenced)}
    missing = [v for v, t in times.items() if t is None]
    known = [t for t in times.values() if t is not None]
    oldest = min(known) if known else None
    age = 0 if oldest is None else max(0, math.ceil((now - oldest).total_seconds())) + MARGIN_S
    props = _properties(spark, path)
    current = {LOG_PROP: interval_seconds(props.get(LOG_PROP)), FILES_PROP: interval_seconds(props.get(FILES_PROP))}
    return TableRetention(path=path, referenced=dict(referenced), oldest_time=oldest,
                          log_s=spec.seconds("log") + age, deleted_files_s=spec.seconds("deleted_files") + age,
                          current=current, missing=missing)


def set_retention(spark: SparkSession, path: str, log_s: int, deleted_files_s: int) -> None:
    """Set both properties of the table at ``path`` in one metadata-only commit that keeps the
    previous commit's ``userMetadata`` (its lineage: the data did not change)."""
    quoted = path.replace("`", "``")
    with commit_metadata(spark, commit_user_metadata(spark, path)):
        spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{LOG_PROP}' = 'interval {int(log_s)} seconds', "
                  f"'{FILES_PROP}' = 'interval {int(deleted_files_s)} seconds')")
    log.info("%s: %s = %ds, %s = %ds", path, LOG_PROP, log_s, FILES_PROP, deleted_files_s)


def _tables(platform: PlatformConfig, uc: UseCaseConfig, refs: dict[str, dict[int, list[int]]]) -> Iterable[str]:
    default = catalog.path(platform, "features_offline", uc)
    return list(dict.fromkeys([default, *refs]))


def keep_training_data(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *,
                       exact: bool = False, now: datetime | None = None) -> list[TableRetention]:
    """Make every training table keep what registered versions need (see the module docstring).

    Without ``exact`` (after a registration) a table is changed only when a referenced version
    would be within half a floor of expiring (or already beyond), so most runs commit nothing;
    with ``exact`` (``driftline vacuum``) both properties are set to what the registry needs
    now, lowering them once a version is gone.

    Example::

        [t.deleted_files_s for t in keep_training_data(spark, platform, uc, exact=True)]
    """
    from driftline.training import model_spec

    spec = model_spec(uc).retention
    refs = referenced_versions(platform, uc)
    out = []
    for path in _tables(platform, uc, refs):
        if not is_delta_table(spark, path):
            continue
        plan = plan_table(spark, uc, path, refs.get(path, {}), now)
        for v in plan.missing:
            log.warning("%s: version %d, trained on by %s v%s, is no longer in the table's log: its test set "
                        "cannot be rebuilt", path, v, uc.name, plan.referenced[v])
        cur_log = plan.current.get(LOG_PROP)
        cur_log = DELTA_DEFAULTS[LOG_PROP] if cur_log is None else cur_log
        cur_files = plan.current.get(FILES_PROP)
        cur_files = DELTA_DEFAULTS[FILES_PROP] if cur_files is None else cur_files
        if exact:
            change = (cur_log, cur_files) != (plan.log_s, plan.deleted_files_s)
        else:
            change = bool(plan.referenced) and (
                cur_log < plan.log_s - spec.seconds("log") // 2
                or cur_files < plan.deleted_files_s - spec.seconds("deleted_files") // 2)
        if change:
            set_retention(spark, path, plan.log_s, plan.deleted_files_s)
            plan = TableRetention(**{**plan.__dict__, "changed": True})
        out.append(plan)
    return out


@dataclass(frozen=True)
class VacuumResult:
    """One vacuumed table: its retention plan and how many files VACUUM removed."""

    table: TableRetention
    deleted_files: int


def vacuum(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, dry_run: bool = False,
           now: datetime | None = None) -> list[VacuumResult]:
    """``driftline vacuum``: set the retention of each training table of ``uc`` to what its
    registered versions need (:func:`keep_training_data` with ``exact``), then ``VACUUM`` it at
    that retention (``dry_run``: only count what would go, and change nothing).

    Example::

        [r.deleted_files for r in vacuum(spark, platform, uc)]
    """
    from delta.tables import DeltaTable

    if dry_run:
        refs = referenced_versions(platform, uc)
        plans = [plan_table(spark, uc, p, refs.get(p, {}), now) for p in _tables(platform, uc, refs)
                 if is_delta_table(spark, p)]
    else:
        plans = keep_training_data(spark, platform, uc, exact=True, now=now)
    out = []
    for plan in plans:
        quoted = plan.path.replace("`", "``")
        hours = plan.deleted_files_s / 3600.0
        doomed = _dry_run(spark, quoted, hours) if dry_run else None
        if not dry_run:
            before = _data_files(spark, plan.path)
            # at the table's deletedFileRetentionDuration; Delta logs VACUUM START/END commits: they keep the
            # lineage of the last write too
            with commit_metadata(spark, commit_user_metadata(spark, plan.path)):
                DeltaTable.forPath(spark, plan.path).vacuum()
            doomed = before - _data_files(spark, plan.path)
        out.append(VacuumResult(plan, int(doomed or 0)))
        log.info("vacuum %s: %d files %s; keeps versions %s (model versions %s)", plan.path, doomed or 0,
                 "would go" if dry_run else "removed", sorted(plan.referenced), plan.referenced)
    return out


def _dry_run(spark: SparkSession, quoted: str, hours: float) -> int:
    """Files a VACUUM at ``hours`` would remove; Delta's check against the table's own (maybe
    longer) retention is off for it, as nothing is removed."""
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "false")
    try:
        return int(spark.sql(f"VACUUM delta.`{quoted}` RETAIN {hours} HOURS DRY RUN").count())
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _data_files(spark: SparkSession, path: str) -> int:
    """Parquet files under ``path`` (outside ``_delta_log``), on any Hadoop file system."""
    jvm: Any = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    files = fs.listFiles(root, True)
    n = 0
    while files.hasNext():
        p = str(files.next().getPath().toString())
        if p.endswith(".parquet") and "/_delta_log/" not in p:
            n += 1
    return n


def format_vacuum(results: list[VacuumResult], dry_run: bool = False) -> str:
    """One line per table for the command line."""
    if not results:
        return "no training table to vacuum"
    lines = []
    for r in results:
        t = r.table
        keeps = (f"keeps version {t.oldest_version} and later (registered versions trained on "
                 + ", ".join(f"v{k} by model v{'/'.join(map(str, vs))}" for k, vs in sorted(t.referenced.items())) + ")"
                 if t.referenced else "no registered version trained on it")
        lines.append(f"{t.path}: {r.deleted_files} files {'would be ' if dry_run else ''}removed; {keeps}; "
                     f"retention: log {t.log_s}s, deleted files {t.deleted_files_s}s")
    return "\n".join(lines)
