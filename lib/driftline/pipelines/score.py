"""Score a use case's Kafka events online with the champion (and the challenger
in shadow or canary), writing predictions to Delta exactly once.

    ./spark-submit.sh streaming/score.py --usecase fraud                 # runs until stopped
    ./spark-submit.sh streaming/score.py --usecase fraud --trigger availableNow

Reads <uc>.events; writes predictions/<uc>, gold/<uc>_features_stream,
quarantine/<uc>_events_stream (and the plan of each batch next to the
checkpoint); publishes served
predictions to <uc>.predictions and bad events to <uc>.dlq. A promotion, rollback
or `driftline route` takes effect at the next micro-batch. Settings: the
`streaming:` and `routing:` sections of conf/usecases/<uc>.yaml.

SIGTERM or Ctrl-C lets the running micro-batch finish, then stops the query
(exit 0); the checkpoint resumes where it stopped.

Exit codes: 0 stopped cleanly, 2 bad arguments or configuration, 1 the query failed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from types import FrameType

from driftline.config import trigger_options
from driftline.jobs import EXIT_FAILED, EXIT_OK, JobContext, entry_point
from driftline.preflight import needs
from driftline.query_metrics import attach_query_metrics
from driftline.scoring import start_scoring

log = logging.getLogger("driftline.score")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trigger", help="availableNow, once or an interval such as '5 seconds' "
                                          "[streaming.trigger of the use case]")
    parser.add_argument("--checkpoint", help="checkpoint location [<checkpoint_root>/score/<uc>]")
    parser.add_argument("--migrate-from", metavar="OLD_CHECKPOINT",
                        help="start a new --checkpoint where the query on OLD_CHECKPOINT stopped (after an upgrade "
                             "that changed the query's state): no event lost, none scored twice")
    parser.add_argument("--unsafe-no-idempotence", action="store_true", help=argparse.SUPPRESS)


def _run(ctx: JobContext) -> int:
    a, uc = ctx.args, ctx.uc
    if a.trigger:
        trigger_options(a.trigger)  # a bad --trigger fails before the JVM starts
    metrics = attach_query_metrics(ctx.spark, ctx.platform)  # rows/s, batch time, latency -> monitoring/queries
    query = start_scoring(ctx.spark, ctx.platform, uc, trigger=a.trigger, checkpoint=a.checkpoint,
                          idempotent=not a.unsafe_no_idempotence, migrate_from=a.migrate_from)
    stopping: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("scoring %s: query %s running (checkpoint %s)", uc.name, query.id, a.checkpoint or "default")
    try:
        while query.isActive and not stopping:
            query.awaitTermination(1)
        if stopping:
            log.info("signal %d: letting the running batch finish, then stopping", stopping[0])
            while query.isActive and query.status.get("isTriggerActive"):
                time.sleep(0.2)
            query.stop()
            print(f"score: stopped {uc.name} cleanly after signal {stopping[0]}")
            return EXIT_OK
    finally:
        metrics.close()
    error = query.exception()
    if error is not None:
        print(f"score: query failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"score: {uc.name}: all available events scored")
    return EXIT_OK


main = entry_point("score", __doc__, run=_run, arguments=_arguments, preflight=needs(kafka=True, mlflow=True))
