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

from driftline.config import load_usecase
from driftline.errors import DriftlineError
from driftline.jobargs import job_parser, platform_from_args

log = logging.getLogger("driftline.score")


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--trigger", help="availableNow, once or an interval such as '5 seconds' "
                                          "[streaming.trigger of the use case]")
    parser.add_argument("--checkpoint", help="checkpoint location [<checkpoint_root>/score/<uc>]")
    parser.add_argument("--unsafe-no-idempotence", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        platform = platform_from_args(args)
        usecase = load_usecase(args.usecase)
        from driftline.query_metrics import attach_query_metrics
        from driftline.scoring import routing_spec, start_scoring, streaming_spec
        from driftline.session import build_session

        streaming_spec(usecase), routing_spec(usecase)  # configuration errors before the JVM starts
        spark = build_session(platform, f"driftline-score-{usecase.name}")
        metrics = attach_query_metrics(spark, platform)  # rows/s, batch time, latency -> monitoring/queries
        query = start_scoring(spark, platform, usecase, trigger=args.trigger, checkpoint=args.checkpoint,
                              idempotent=not args.unsafe_no_idempotence)
    except (DriftlineError, ValueError) as e:
        print(f"score: error: {e}", file=sys.stderr)
        return 2
    stopping: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("scoring %s: query %s running (checkpoint %s)", usecase.name, query.id, args.checkpoint or "default")
    while query.isActive and not stopping:
        query.awaitTermination(1)
    if stopping:
        log.info("signal %d: letting the running batch finish, then stopping", stopping[0])
        while query.isActive and query.status.get("isTriggerActive"):
            time.sleep(0.2)
        query.stop()
        metrics.close()
        print(f"score: stopped {usecase.name} cleanly after signal {stopping[0]}")
        return 0
    metrics.close()
    error = query.exception()
    if error is not None:
        print(f"score: query failed: {error}", file=sys.stderr)
        return 1
    print(f"score: {usecase.name}: all available events scored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
