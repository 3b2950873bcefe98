"""Validate a use case's bronze records into silver, quarantine and a quality report.

    ./spark-submit.sh jobs/validate.py --usecase fraud

For events and labels: parse each raw record with the use case's schema,
apply its rules (required, types, min/max, allowed values, max_length) and
drop duplicate ids, then write

- ``silver/<uc>_events``, ``silver/<uc>_labels``: the typed, valid records;
- ``quarantine/<uc>_events``, ``quarantine/<uc>_labels``: every other record
  with its ``reason`` and source coordinates (topic, partition, offset);
- ``monitoring/<uc>_validation``: one row per run and stream (counts, missing
  rates, duplicate rate, counts per rule, limits exceeded).

Silver and quarantine are rebuilt from the bronze version read, so a re-run
gives the same tables; a run over an unchanged bronze version is skipped.
When a limit of the ``validation:`` section is exceeded, quarantine and the
report are still written but silver is not, and the job exits with code 3.

Exit codes: 0 done, 2 bad arguments, configuration or missing input,
3 a data quality limit was exceeded.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from driftline import catalog
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.delta import delta_version, read_delta, write_delta
from driftline.errors import DataQualityError, MissingTableError
from driftline.jobs import JobContext, entry_point
from driftline.lineage import Lineage, table_input, up_to_date
from driftline.quality import (
    Dataset,
    QualityReport,
    classify,
    evaluate,
    event_dataset,
    good_records,
    label_dataset,
    limits_prefix,
    quality_report,
    quarantined_records,
)

log = logging.getLogger("driftline.jobs.validate")



def validate_stream(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    dataset: Dataset,
    *,
    run_id: str,
    run_time: dt.datetime,
) -> QualityReport | None:
    """Validate one stream's bronze table; return its evaluated report, or None when
    there was nothing to do (no label table yet, or silver already built from this version)."""
    name = f"{usecase.name}_{dataset.name}"
    bronze, silver, quarantine, monitoring = (
        catalog.path(platform, key, usecase)
        for key in (f"bronze_{dataset.name}", f"silver_{dataset.name}", f"quarantine_{dataset.name}", "validation")
    )
    version = delta_version(spark, bronze)
    if version is None:
        if dataset.name == "events":
            raise MissingTableError(f"no Delta table at {bronze}: run jobs/ingest.py --usecase {usecase.name} first")
        log.warning("%s: no bronze table at %s yet, nothing to validate", name, bronze)
        return None
    lineage = Lineage.for_job("validate", platform, usecase, run_id, inputs=[table_input(bronze, version)],
                              extra={"dataset": dataset.name})
    if up_to_date(spark, silver, lineage):
        log.info("%s: silver is up to date with bronze version %d", name, version)
        return None
    classified = classify(read_delta(spark, bronze, version), dataset).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        report = quality_report(
            classified, dataset, usecase=usecase.name, run_id=run_id, run_time=run_time,
            source_table=bronze, source_version=version,
        )
        report = evaluate(report, dataset.limits, limits_prefix(dataset))
        meta = lineage.to_json()
        write_delta(quarantined_records(classified, run_id, run_time), quarantine, metadata=meta)
        # One report row per (config, bronze version), even when a failed run is repeated.
        # merge_schema: a report table from before ``unknown_fields`` gains the column
        write_delta(report.to_frame(spark), monitoring, mode="append", metadata=meta,
                    txn=(f"validate:{name}:{lineage.config_hash}", version), merge_schema=True)
        if not report.violations:
            write_delta(good_records(classified, dataset), silver, metadata=meta)
    finally:
        classified.unpersist()
    log.info("%s: %d in, %d good, %d quarantined (%s)", name, report.records_in, report.records_good,
             report.records_quarantined, report.status)
    return report


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    run_id: str | None = None,
    run_time: dt.datetime | None = None,
) -> dict[str, QualityReport | None]:
    """Validate events and labels; raise :class:`DataQualityError` after writing if a limit was exceeded.

    Example::

        reports = run(spark, platform, load_usecase("fraud"))
        reports["events"].quarantine_rate  # 0.015
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    run_time = run_time or dt.datetime.now(dt.UTC)
    reports: dict[str, QualityReport | None] = {
        ds.name: validate_stream(spark, platform, usecase, ds, run_id=run_id, run_time=run_time)
        for ds in (event_dataset(usecase), label_dataset(usecase))
    }
    failed = [r for r in reports.values() if r is not None and r.violations]
    if failed:
        raise DataQualityError("; ".join(f"{r.usecase} {r.dataset}: " + "; ".join(r.violations) for r in failed))
    return reports


def _run(ctx: JobContext) -> None:
    run(ctx.spark, ctx.platform, ctx.uc)


main = entry_point("validate", __doc__, run=_run)
