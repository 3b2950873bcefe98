"""Build a use case's gold feature tables from silver, from the ``features:`` definitions.

    ./spark-submit.sh jobs/build_features.py --usecase fraud
    ./spark-submit.sh jobs/build_features.py --usecase eta --as-of 2024-05-01T12:00:00Z

- ``gold/<uc>_features_offline``: every labelled event with its point-in-time
  features (only the entity's strictly earlier events and already-arrived
  labels count) and its label; rebuilt from the silver versions read.
- ``gold/<uc>_features_online``: the latest aggregate values per entity as of
  ``--as-of`` (default: the newest event time in silver), upserted with a
  Delta MERGE; an older snapshot never overwrites a newer one. A use case
  without aggregates (only per-event features) has no online table.

A run over unchanged silver versions and configuration is skipped.

Exit codes: 0 done, 2 bad arguments, configuration or missing input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import uuid

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline import catalog
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.delta import read_delta, require_version, upsert_delta, write_delta
from driftline.errors import DriftlineError
from driftline.features import (
    FeatureSpec,
    feature_spec,
    online_columns,
    online_features,
    point_in_time_features,
    training_set,
)
from driftline.jobs import JobContext, entry_point
from driftline.lineage import Lineage, table_input, up_to_date

log = logging.getLogger("driftline.jobs.build_features")


def latest_event_time(spark: SparkSession, events_path: str, version: int, spec: FeatureSpec) -> dt.datetime:
    """The newest event time in the silver events (the default ``as_of``)."""
    row = read_delta(spark, events_path, version).agg(F.max(F.col(spec.timestamp)).alias("t")).first()
    if row is None or row["t"] is None:
        raise DriftlineError(f"{events_path} (version {version}) has no events: nothing to build features from")
    latest: dt.datetime = row["t"]
    return latest if latest.tzinfo else latest.replace(tzinfo=dt.UTC)


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    as_of: dt.datetime | None = None,
    run_id: str | None = None,
) -> dict[str, bool]:
    """Build the offline and online feature tables; return which of them were (re)written.

    Example::

        run(spark, platform, load_usecase("eta"))  # {'offline': True, 'online': True}
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    spec = feature_spec(usecase)
    hint = f"run jobs/ingest.py and jobs/validate.py --usecase {usecase.name} first"
    events_path = catalog.path(platform, "silver_events", usecase)
    labels_path = catalog.path(platform, "silver_labels", usecase)
    events_version = require_version(spark, events_path, hint)
    labels_version = require_version(spark, labels_path, hint)
    inputs = [table_input(events_path, events_version), table_input(labels_path, labels_version)]
    events = read_delta(spark, events_path, events_version)
    labels = read_delta(spark, labels_path, labels_version)
    written = {"offline": False, "online": False}

    offline_path = catalog.path(platform, "features_offline", usecase)
    offline_lineage = Lineage.for_job("build_features", platform, usecase, run_id, inputs, {"table": "offline"})
    if up_to_date(spark, offline_path, offline_lineage):
        log.info("%s is up to date", offline_path)
    else:
        offline = training_set(point_in_time_features(events, spec, labels), labels, spec)
        write_delta(offline, offline_path, metadata=offline_lineage.to_json())
        written["offline"] = True

    if not online_columns(spec):
        log.info("%s: no aggregates are defined, so there is no online table to build", usecase.name)
        return written
    as_of = as_of or latest_event_time(spark, events_path, events_version, spec)
    online_path = catalog.path(platform, "features_online", usecase)
    online_lineage = Lineage.for_job(
        "build_features", platform, usecase, run_id, inputs, {"table": "online", "as_of": as_of.isoformat()}
    )
    if up_to_date(spark, online_path, online_lineage):
        log.info("%s is up to date", online_path)
    else:
        online = online_features(events, spec, as_of, labels)
        changed = upsert_delta(spark, online, online_path, keys=[spec.entity], metadata=online_lineage.to_json(),
                               newer_than="as_of")
        written["online"] = True
        log.info("%s: %d entities inserted or updated as of %s", online_path, changed, as_of.isoformat())
    return written


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text!r}") from e
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=_timestamp, help="online snapshot time, ISO 8601 (default: newest event)")


def _run(ctx: JobContext) -> None:
    run(ctx.spark, ctx.platform, ctx.uc, as_of=ctx.args.as_of)


main = entry_point("build_features", __doc__, run=_run, arguments=_arguments)
