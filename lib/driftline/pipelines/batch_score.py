"""Batch prediction with the model behind an alias, natively in the JVM.

    ./spark-submit.sh jobs/batch_score.py --usecase fraud
    ./spark-submit.sh jobs/batch_score.py --usecase eta --alias challenger --batch-date 2024-05-01
    ./spark-submit.sh jobs/batch_score.py --usecase fraud --table /data/lake/gold/fraud_features_offline

Loads ``models:/<uc>-model@<alias>`` with ``mlflow.spark.load_model`` (a Spark
``PipelineModel``, no Python UDF), scores the input Delta table (default
``gold/<uc>_features_offline``) and writes ``predictions/<uc>_batch``,
partitioned by ``batch_date``. Each row carries the model name and version and
``score`` (P(class 1) for binary labels, the prediction for regression) and
``prediction`` (binary: score >= the version's decision threshold, the tag
``driftline.decision_threshold``, as in streaming scoring). A
re-run for the same ``--batch-date`` replaces that partition (``replaceWhere``)
instead of adding duplicates.

Exit codes: 0 done, 2 bad arguments, configuration, missing input or model.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline import catalog
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.delta import read_delta, write_delta
from driftline.errors import UsageError
from driftline.jobs import JobContext, entry_point
from driftline.preflight import needs
from driftline.registry import CHAMPION, client_for, load_alias, model_name, version_threshold
from driftline.training import batch_predictions, read_training_table

log = logging.getLogger("driftline.jobs.batch_score")

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ScoreOutcome:
    output: str
    model_version: int
    batch_date: str
    rows: int
    input_version: int


def predictions_table(platform: PlatformConfig, usecase: UseCaseConfig) -> str:
    return catalog.path(platform, "predictions_batch", usecase)


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    alias: str = CHAMPION,
    table: str | None = None,
    batch_date: str | None = None,
    only_batch_date: bool = False,
    output: str | None = None,
) -> ScoreOutcome:
    """Score ``table`` with the model behind ``alias`` into the ``batch_date`` partition.

    With ``only_batch_date`` only rows whose event time falls on ``batch_date`` are scored.

    Example::

        run(spark, platform, load_usecase("fraud"), batch_date="2024-05-01").rows
    """
    batch_date = batch_date or datetime.now(UTC).date().isoformat()
    if not DATE_RE.match(batch_date):
        raise UsageError(f"batch_date: expected YYYY-MM-DD, got {batch_date!r}")
    source = table or catalog.path(platform, "features_offline", usecase)
    df, input_version = read_training_table(spark, source)
    if only_batch_date:
        df = df.where(F.to_date(F.col(usecase.event_time)) == F.lit(batch_date).cast("date"))
    model, version = load_alias(platform, usecase, alias)
    threshold = version_threshold(client_for(platform), usecase, version)
    preds = batch_predictions(model, df, usecase, model_name=model_name(usecase), model_version=version,
                              batch_key=batch_date, threshold=threshold)
    target = output or predictions_table(platform, usecase)
    write_delta(preds, target, partition_by=["batch_date"], replace_where=f"batch_date = '{batch_date}'")
    rows = read_delta(spark, target).where(F.col("batch_date") == batch_date).count()
    log.info("%s: scored %d rows of %s@v%d with %s v%d (threshold %.6g) into %s[batch_date=%s]",
             usecase.name, rows, source, input_version, model_name(usecase), version, threshold, target, batch_date)
    return ScoreOutcome(output=target, model_version=version, batch_date=batch_date, rows=rows,
                        input_version=input_version)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alias", default=CHAMPION, help="model alias to score with (default champion)")
    parser.add_argument("--table", help="Delta table to score (default gold/<uc>_features_offline)")
    parser.add_argument("--batch-date", help="partition to (re)write, YYYY-MM-DD (default today, UTC)")
    parser.add_argument("--only-batch-date", action="store_true",
                        help="score only rows whose event time falls on --batch-date")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_date and not DATE_RE.match(args.batch_date):
        parser.error(f"--batch-date: expected YYYY-MM-DD, got {args.batch_date!r}")


def _run(ctx: JobContext) -> None:
    a = ctx.args
    out = run(ctx.spark, ctx.platform, ctx.uc, alias=a.alias, table=a.table, batch_date=a.batch_date,
              only_batch_date=a.only_batch_date)
    log.info("batch_score %s: %d rows -> %s", ctx.uc.name, out.rows, out.output)


main = entry_point("batch_score", __doc__, run=_run, arguments=_arguments, check=_check, preflight=needs(mlflow=True))
