"""Monitor a use case's stream per event-time window against the champion's reference profile.

Three streaming queries, each with its checkpoint under ``monitor/<uc>/<source>``:

  events       <uc>.events (Kafka)       -> feature drift (PSI, Jensen-Shannon, Wasserstein,
                                             chi-square), volume, missing and quarantine rates
  predictions  predictions/<uc> (Delta)  -> prediction drift, null predictions, score range,
                                             positive rate (served rows)
  performance  predictions + <uc>.labels -> ROC AUC, precision, recall (or RMSE, MAE)

into monitoring/<uc>_drift, monitoring/<uc>_quality and monitoring/<uc>_performance.
Window, lateness, thresholds and the Benjamini-Hochberg level come from the
``drift:`` section of conf/usecases/<uc>.yaml. A window is written once the
event time passes its end by ``drift.lateness``; a replay rewrites the same rows.

    ./spark-submit.sh streaming/monitor.py --usecase fraud                        # all there is, then stop
    ./spark-submit.sh streaming/monitor.py --usecase fraud --trigger '30 seconds' # until stopped
    ./spark-submit.sh streaming/monitor.py --usecase fraud --sources events --profile ref.json

Exit codes: 0 done, 2 bad arguments, configuration or missing input (no champion, no predictions table).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from driftline.errors import DriftlineError
from driftline.jobargs import job_parser, platform_from_args
from driftline.monitoring import SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--trigger", default="availableNow",
                        help="availableNow (default: all that is there, then stop), once, or an interval "
                             "such as '30 seconds' (runs until stopped)")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help=f"comma-separated subset of {','.join(SOURCES)} (default: all)")
    parser.add_argument("--profile", help="reference profile JSON to use instead of the champion's (MLflow)")
    parser.add_argument("--alias", default="champion", help="registry alias whose profile is the reference")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest (default) or latest, for Kafka")
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        parser.error(f"--sources: got {args.sources!r}, expected a comma-separated subset of {','.join(SOURCES)}")
    try:
        platform = platform_from_args(args)
        from driftline.config import load_usecase
        from driftline.monitoring import await_all, drift_spec, load_reference_profile, start_monitor
        from driftline.query_metrics import attach_query_metrics
        from driftline.session import build_session

        uc = load_usecase(args.usecase)
        spec = drift_spec(uc)
        if args.profile:
            profile = json.loads(Path(args.profile).read_text())
        else:
            profile = load_reference_profile(platform, uc, args.alias)
        spark = build_session(platform, f"driftline-monitor-{uc.name}")
        listener = attach_query_metrics(spark, platform)
        try:
            queries = start_monitor(spark, platform, uc, profile, spec=spec, trigger=args.trigger,
                                    sources=sources, starting_offsets=args.starting_offsets)
            await_all(queries)
        finally:
            listener.close()
        print(f"monitor: {uc.name}: {', '.join(sources)} -> monitoring/{uc.name}_drift, _quality, _performance")
        return 0
    except (DriftlineError, ValueError, OSError) as e:
        print(f"monitor: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
