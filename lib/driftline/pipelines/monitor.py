"""Monitor a use case's stream per event-time window against the champion's reference profile.

Three streaming queries, each with its checkpoint under ``monitor/<uc>/<source>``:

  events       <uc>.events (Kafka)       -> feature drift (PSI, Jensen-Shannon, Wasserstein,
                                             chi-square), volume, missing and quarantine rates
  predictions  predictions/<uc> (Delta)  -> prediction drift, null predictions, score range,
                                             positive rate (served rows)
  performance  predictions + <uc>.labels -> ROC AUC, precision, recall (or RMSE, MAE)

into monitoring/<uc>_drift, monitoring/<uc>_quality and monitoring/<uc>_performance.
Window, lateness, thresholds and the Benjamini-Hochberg level come from the
``drift:`` section of conf/usecases/<uc>.yaml; windows are aligned to ``drift.origin``
(the epoch, a time, or the first event time of the training data of the model behind
--alias). A window is written once the event time passes its end by ``drift.lateness``;
a replay rewrites the same rows. A run that stops by itself (availableNow, once) then
writes the windows still open, the last included, and they are final: rows arriving
for them later are dropped as late. Each time windows are written, the ``drift.alert``
rule (n bad windows of the last m) is evaluated and a new alert is published once to
<uc>.alerts and recorded in monitoring/<uc>_alerts (--no-alerts: not evaluated).

    ./spark-submit.sh streaming/monitor.py --usecase fraud                        # all there is, then stop
    ./spark-submit.sh streaming/monitor.py --usecase fraud --trigger '30 seconds' # until stopped
    ./spark-submit.sh streaming/monitor.py --usecase fraud --sources events --profile ref.json

Exit codes: 0 done, 2 bad arguments, configuration or missing input (no champion, no predictions table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from driftline.errors import UsageError
from driftline.jobs import JobContext, entry_point
from driftline.monitoring import SOURCES, await_all, load_reference_profile, start_monitor
from driftline.preflight import needs
from driftline.query_metrics import attach_query_metrics


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trigger", default="availableNow",
                        help="availableNow (default: all that is there, then stop), once, or an interval "
                             "such as '30 seconds' (runs until stopped)")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help=f"comma-separated subset of {','.join(SOURCES)} (default: all)")
    parser.add_argument("--profile", help="reference profile JSON to use instead of the champion's (MLflow)")
    parser.add_argument("--alias", default="champion",
                        help="registry alias whose profile is the reference (and whose training data "
                             "drift.origin: training_start means)")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest (default) or latest, for Kafka")
    parser.add_argument("--no-alerts", action="store_true",
                        help="do not evaluate the drift.alert rule as windows close (driftline alerts check can)")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(args.sources) - set(SOURCES))
    if unknown or not args.sources:
        parser.error(f"--sources: got {','.join(args.sources)!r}, expected a comma-separated subset of "
                     f"{','.join(SOURCES)}")


def _run(ctx: JobContext) -> None:
    a, uc = ctx.args, ctx.uc
    try:
        profile = (json.loads(Path(a.profile).read_text()) if a.profile
                   else load_reference_profile(ctx.platform, uc, a.alias))
    except OSError as e:
        raise UsageError(f"--profile: cannot read {a.profile}: {e}") from e
    listener = attach_query_metrics(ctx.spark, ctx.platform)
    try:
        queries = start_monitor(ctx.spark, ctx.platform, uc, profile, spec=uc.drift, trigger=a.trigger,
                                sources=a.sources, starting_offsets=a.starting_offsets, alias=a.alias,
                                alerts=not a.no_alerts)
        await_all(queries)  # availableNow / once: then every window still open is written
    finally:
        listener.close()
    print(f"monitor: {uc.name}: {', '.join(a.sources)} -> monitoring/{uc.name}_drift, _quality, _performance")


def _preflight(ctx: JobContext) -> None:
    needs(kafka=True, mlflow=not ctx.args.profile)(ctx)


main = entry_point("monitor", __doc__, run=_run, arguments=_arguments, check=_check, preflight=_preflight)
