"""Continuous training: ingest → validate → build_features → train (register challenger,
quality gate) as one pipeline, now or on each drift alert.

    ./spark-submit.sh jobs/pipeline.py --usecase fraud --once
    ./spark-submit.sh jobs/pipeline.py --usecase fraud --on-alert
    ./spark-submit.sh jobs/pipeline.py --usecase fraud --on-alert --max-alerts 1 --timeout-s 600

``--once`` runs the steps now. ``--on-alert`` consumes ``<uc>.alerts`` (published by
the stream monitor as windows close, or by ``driftline alerts check``) in the consumer group
``driftline-pipeline-<uc>`` and, for each alert that asks for retraining, runs the
pipeline and then commits the alert's offset; a crash before the commit means the
alert is handled again on the next start. :func:`run_on_alert` also runs in a thread of
a long-running process (``driftline run``): a ``stop`` event ends it within one poll,
and ``on_handled`` hears of each alert handled.

The new version is registered as ``challenger`` and gated against the champion. With
``delivery.mode: progressive`` (the default) a pass puts it in shadow (routing
``shadow``, audited ``shadow_start`` with the gate's metrics), and progressive delivery
decides later whether it becomes champion; with ``delivery.mode: direct``, or when
there is no champion yet, a pass promotes it at once. Each step is the job of the same name
(``jobs/<step>.py``), so the pipeline is as idempotent as they are: ingest resumes
after the offsets bronze holds ("fresh data"), validate and build_features skip
inputs they have already processed, and training is skipped when the newest
registered version was trained on the same feature table version (``--force``
trains anyway); a newest version that was registered but never gated (a run killed
between the two) is gated then instead.

Every run is recorded in ``audit/<uc>_model_events`` as ``retrain_triggered``
(reason ``alert <alert_id>``, or ``--reason`` with ``--once``; to_version is the new
challenger, empty when nothing was trained). An alert is skipped when a
``retrain_triggered`` row already names it, when a retrain started after it was
raised (that retrain already used fresher data), when it says
``retrain: false``, or while a challenger is in progressive delivery (shadow or canary:
:func:`driftline.delivery.under_evaluation`; a second challenger would replace it before the
evidence on it is in, and the monitor raises new alerts while the drift lasts), or when it
was raised before the latest promotion or rollback (it judged the previous champion:
:func:`driftline.delivery.champion_since`). A malformed
message is logged and skipped, never retried.

Exit codes: 0 done, 2 bad arguments, configuration or missing input,
3 a data quality limit was exceeded (nothing trained).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline.alerts import Alert
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.delivery import champion_since, scored_before, under_evaluation
from driftline.delta import delta_version
from driftline.errors import UsageError
from driftline.jobs import JobContext, entry_point
from driftline.pipelines import build_features, ingest, train, validate
from driftline.preflight import needs
from driftline.registry import CHAMPION, alias_version, audit_path, client_for, model_name, read_events, record_event
from driftline.training import model_spec

log = logging.getLogger("driftline.jobs.pipeline")

STEPS = ("ingest", "validate", "build_features", "train")
TRIGGER = "retrain_triggered"


@dataclass(frozen=True)
class PipelineOutcome:
    """What one pipeline run did."""

    reason: str
    ingested: dict[str, int]
    validated: dict[str, int | None]
    features: dict[str, bool]
    version: int | None = None
    run_id: str | None = None
    promoted: bool | None = None
    gate: str | None = None  # what the gate did: promote | shadow_start | gate_refused (None: not trained)
    skipped: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _latest_trained_on(platform: PlatformConfig, uc: UseCaseConfig) -> tuple[int, str, int] | None:
    """(version, data path, data version) of the newest registered version, if any."""
    from mlflow.exceptions import MlflowException

    client = client_for(platform)
    try:
        versions = client.search_model_versions(f"name='{model_name(uc)}'")
    except MlflowException:
        return None
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    if not newest.run_id:
        return None
    params = client.get_run(newest.run_id).data.params
    if "data.path" not in params or "data.version" not in params:
        return None
    return int(newest.version), params["data.path"], int(params["data.version"])


GATE_ACTIONS = ("promote", "shadow_start", "gate_refused")  # the audit rows of a gate decision


def _gated(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int) -> bool:
    """Whether ``version`` has a gate decision (or a promotion) in the audit table."""
    events = read_events(spark, audit_path(platform, uc))
    return bool(events.where(F.col("action").isin(*GATE_ACTIONS) & (F.col("to_version") == F.lit(version)))
                .limit(1).count())


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    reason: str = "manual",
    force: bool = False,
    on_alert: bool = False,
) -> PipelineOutcome:
    """Run ingest → validate → build_features → train on whatever is new, then audit
    ``retrain_triggered`` with ``reason``. Raises :class:`DataQualityError` (after the
    quality report is written) when validation exceeds a limit; nothing is trained then.

    Example::

        out = run(spark, platform, load_usecase("fraud"), reason="alert fraud-20240201T0100Z-1a2b")
        out.version, out.promoted  # (4, False): a new challenger, refused by the gate or in shadow

    ``on_alert``: the model trains on ``model.retrain_window`` of event time when it is set.
    """
    if not reason:
        raise UsageError("reason: expected why the pipeline runs (an alert id or 'manual')")
    started = datetime.now(UTC)
    t0 = time.monotonic()
    client = client_for(platform)
    champion_before = alias_version(client, model_name(usecase), CHAMPION)
    total = len(STEPS)

    def step(i: int, name: str, result: Any, since: float) -> None:
        log.info("pipeline %s [%d/%d] %s: %s (%.0fs)", usecase.name, i, total, name, result, time.monotonic() - since)

    s = time.monotonic()
    ingested = ingest.run(spark, platform, usecase)
    step(1, "ingest", ingested, s)
    s = time.monotonic()
    reports = validate.run(spark, platform, usecase)
    validated = {k: (None if r is None else int(r.records_good)) for k, r in reports.items()}
    step(2, "validate", validated, s)
    s = time.monotonic()
    features = build_features.run(spark, platform, usecase)
    step(3, "build_features", features, s)

    s = time.monotonic()
    table = train.features_table(platform, usecase)
    data_version = delta_version(spark, table)
    latest = _latest_trained_on(platform, usecase)
    outcome: dict[str, Any] = {}
    if not force and latest is not None and latest[1:] == (table, data_version) and _gated(spark, platform, usecase,
                                                                                          latest[0]):
        skipped = f"no fresh data: v{latest[0]} was trained on {table}@v{data_version}"
        step(4, "train", f"skipped, {skipped}", s)
        outcome["skipped"] = skipped
    elif not force and latest is not None and latest[1:] == (table, data_version):
        # registered but never gated (a run killed between the two): gate it now, on its own test set
        from driftline.registry import gate_and_promote, rebuild_test_set

        test, spec, metrics = rebuild_test_set(spark, platform, usecase, latest[0])
        decision = gate_and_promote(spark, platform, usecase, latest[0], test, spec, metrics)
        step(4, "train", f"v{latest[0]} was registered on {table}@v{data_version} but never gated: "
                         f"{decision.action}", s)
        outcome.update(version=latest[0], run_id=client.get_model_version(model_name(usecase), str(latest[0])).run_id,
                       promoted=decision.promoted, gate=decision.action, metrics=dict(metrics))
    else:
        spec = model_spec(usecase)
        if on_alert and spec.retrain_window is not None:
            spec = spec.model_copy(update={"window": spec.retrain_window})
        out = train.run(spark, platform, usecase, spec=spec)
        promoted = None if out.gate is None else out.gate.promoted
        step(4, "train", f"version {out.version} ({out.verdict}), data {out.data.path}@v{out.data.version}", s)
        outcome.update(version=out.version, run_id=out.run_id, promoted=promoted,
                       gate=None if out.gate is None else out.gate.action,
                       metrics=dict(out.metrics))
    result = PipelineOutcome(reason=reason, ingested=dict(ingested), validated=validated, features=dict(features),
                             seconds=time.monotonic() - t0, **outcome)
    audit_reason = reason if result.skipped is None else f"{reason}; {result.skipped}"
    gate_metrics = {k: v for k, v in result.metrics.items() if k not in ("tp", "fp", "tn", "fn")}
    record_event(spark, audit_path(platform, usecase), action=TRIGGER, model=model_name(usecase),
                 from_version=champion_before, to_version=result.version, reason=audit_reason,
                 metrics=gate_metrics, run_id=result.run_id, when=started)
    log.info("pipeline %s done in %.0fs: %s", usecase.name, result.seconds,
             result.skipped or f"new challenger v{result.version}")
    return result


# --------------------------------------------------------------------------- on alert


def alert_reason(alert_id: str) -> str:
    """The audit reason of a retrain an alert triggered: ``alert <alert_id>``."""
    return f"alert {alert_id}"


def _triggers(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> list[tuple[datetime, str]]:
    """(event_time as aware UTC, reason) of every recorded retrain trigger."""
    events = read_events(spark, audit_path(platform, uc)).where(F.col("action") == TRIGGER)
    rows = events.select(F.unix_micros(F.col("event_time")).alias("us"), F.col("reason")).collect()
    return [(datetime.fromtimestamp(r["us"] / 1_000_000, tz=UTC), r["reason"] or "") for r in rows]


def already_handled(triggers: list[tuple[datetime, str]], alert: Alert) -> str | None:
    """Why ``alert`` needs no retrain, or None when it does."""
    mine = alert_reason(alert.alert_id)
    for when, reason in triggers:
        if reason == mine or reason.startswith(mine + ";"):
            return f"already triggered a retrain at {when.isoformat()}"
    later = [(when, reason) for when, reason in triggers if when >= alert.created_at]
    if later:
        when, reason = min(later)
        return f"covered by the retrain started at {when.isoformat()} ({reason}) after the alert was raised"
    return None


@dataclass(frozen=True)
class AlertHandled:
    """What the on-alert loop did with one message."""

    alert_id: str | None
    action: str  # retrained | skipped | invalid
    detail: str
    outcome: PipelineOutcome | None = None


def run_on_alert(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    group_id: str | None = None,
    max_alerts: int | None = None,
    timeout_s: float | None = None,
    force: bool = False,
    poll_s: float = 1.0,
    stop: threading.Event | None = None,
    on_handled: Callable[[AlertHandled], None] | None = None,
    on_start: Callable[[Alert], None] | None = None,
) -> list[AlertHandled]:
    """Consume ``<uc>.alerts`` and run the pipeline for each new alert asking for it;
    stop after ``max_alerts`` messages (retrained, skipped or invalid), ``timeout_s``
    seconds (default: never) or, from another thread, once ``stop`` is set: within one
    poll (``poll_s``) when waiting, after the alert being handled otherwise (its offset is
    committed first). ``on_start`` is called with an alert when its retraining starts, and
    ``on_handled`` with each message's :class:`AlertHandled` after its offset was committed
    (an exception in either is logged, not raised), so a
    long-running process (``driftline run``) can run this in a thread and follow it.

    Example::

        handled = run_on_alert(spark, platform, load_usecase("fraud"), max_alerts=1, timeout_s=300)
        handled[0].action, handled[0].outcome.version  # ('retrained', 2)
        threading.Thread(target=run_on_alert, args=(spark, platform, uc),
                         kwargs={"stop": stop, "on_handled": print}).start()
    """
    from driftline.kafka.clients import ensure_topics, make_consumer

    if max_alerts is not None and max_alerts < 1:
        raise UsageError(f"max_alerts: expected at least 1, got {max_alerts}")
    if timeout_s is not None and timeout_s <= 0:
        raise UsageError(f"timeout_s: expected seconds > 0, got {timeout_s}")
    topic = usecase.topic("alerts")
    group = group_id or f"driftline-pipeline-{usecase.name}"
    ensure_topics(platform.kafka, [topic])
    # a retrain may take longer than the default 5 minutes between polls
    consumer = make_consumer(platform.kafka, group, max_poll_interval_ms=4 * 3600 * 1000)
    consumer.subscribe([topic])
    log.info("pipeline %s: waiting for alerts on %s (group %s)", usecase.name, topic, group)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    handled: list[AlertHandled] = []
    try:
        while max_alerts is None or len(handled) < max_alerts:
            if stop is not None and stop.is_set():
                log.info("pipeline %s: stopped after %d alerts", usecase.name, len(handled))
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.info("pipeline %s: %.0fs passed, stopping after %d alerts", usecase.name, timeout_s,
                         len(handled))
                break
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            if msg.error():
                log.warning("pipeline %s: consumer: %s", usecase.name, msg.error())
                continue
            item = _handle(spark, platform, usecase, msg.value(), force, on_start)
            log.info("pipeline %s: alert %s at %s[%d]@%d: %s: %s", usecase.name, item.alert_id, topic,
                     msg.partition(), msg.offset(), item.action, item.detail)
            consumer.commit(message=msg, asynchronous=False)
            handled.append(item)
            if on_handled is not None:
                try:
                    on_handled(item)
                except Exception:  # noqa: BLE001 - the caller's callback must not stop the consumer
                    log.exception("pipeline %s: on_handled failed for alert %s", usecase.name, item.alert_id)
    finally:
        consumer.close()
    return handled


def stale(alert: Alert, since: tuple[int, datetime] | None, champion: int | None = None,
          served_until: datetime | None = None) -> str | None:
    """Why ``alert`` is about a champion that no longer serves, or None: the monitor judged its
    windows against another version's reference (:attr:`Alert.reference_version`, when the
    alert carries it, against ``champion``), or it was raised before the latest promotion or
    rollback (``since``: version, naive UTC time, from :func:`driftline.delivery.champion_since`),
    or its windows start before ``served_until`` (aware UTC, :func:`driftline.delivery.scored_before`
    the change): they hold events the previous champion served. The new champion gets its own
    windows and, if the drift lasts, its own alert."""
    if alert.reference_version is not None and champion is not None and alert.reference_version != champion:
        return (f"the monitor judged its windows against v{alert.reference_version}'s reference, and v{champion} "
                f"is champion now: v{champion} is watched by its own windows")
    if since is None:
        return None
    version, when = since
    if served_until is not None and alert.window_start.astimezone(UTC) < served_until:
        return (f"its windows start at {alert.window_start.astimezone(UTC):%Y-%m-%d %H:%M}, before "
                f"{served_until:%Y-%m-%d %H:%M:%S}, the newest event scored before v{version} became champion: "
                f"they judged the previous model's predictions; v{version} is watched by its own windows")
    raised = alert.created_at.astimezone(UTC).replace(tzinfo=None)
    if raised >= when:
        return None
    return (f"raised at {raised:%H:%M:%S} before v{version} became champion at {when:%H:%M:%S} UTC: it judged "
            f"the previous model; v{version} is watched by its own windows")


def _handle(
    spark: SparkSession, platform: PlatformConfig, usecase: UseCaseConfig, value: bytes | None, force: bool,
    on_start: Callable[[Alert], None] | None = None,
) -> AlertHandled:
    try:
        alert = Alert.from_json(value or b"")
    except (ValueError, KeyError, TypeError) as e:
        return AlertHandled(None, "invalid", f"not an alert, skipped: {e}")
    if alert.usecase != usecase.name:
        return AlertHandled(alert.alert_id, "skipped", f"alert of use case {alert.usecase!r}, not {usecase.name!r}")
    if not alert.retrain:
        return AlertHandled(alert.alert_id, "skipped", "the alert does not ask for retraining (retrain: false)")
    why = already_handled(_triggers(spark, platform, usecase), alert)
    if why:
        return AlertHandled(alert.alert_id, "skipped", why)
    busy = under_evaluation(platform, usecase)
    if busy is not None:
        return AlertHandled(alert.alert_id, "skipped",
                            f"challenger v{busy} is in progressive delivery: it is promoted or retired first "
                            "(the monitor raises new alerts while the drift lasts)")
    since = champion_since(platform, usecase)
    why = stale(alert, since, alias_version(client_for(platform), model_name(usecase), CHAMPION),
                None if since is None else scored_before(platform, usecase, since[1]))
    if why:
        return AlertHandled(alert.alert_id, "skipped", why)
    log.info("pipeline %s: %s", usecase.name, alert.summary())
    if on_start is not None:
        try:
            on_start(alert)
        except Exception:  # noqa: BLE001 - the caller's callback must not stop the retraining
            log.exception("pipeline %s: on_start failed for alert %s", usecase.name, alert.alert_id)
    outcome = run(spark, platform, usecase, reason=alert_reason(alert.alert_id), force=force, on_alert=True)
    detail = outcome.skipped or f"new challenger v{outcome.version} ({outcome.gate or 'not gated'})"
    return AlertHandled(alert.alert_id, "retrained", detail, outcome)


def _arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="run the pipeline now, once")
    mode.add_argument("--on-alert", action="store_true", help="run it for each new alert on <uc>.alerts")
    parser.add_argument("--reason", default="manual", help="audit reason with --once, e.g. 'nightly' [manual]")
    parser.add_argument("--force", action="store_true", help="train even when the features did not change")
    parser.add_argument("--group-id", help="consumer group with --on-alert [driftline-pipeline-<uc>]")
    parser.add_argument("--max-alerts", type=int,
                        help="with --on-alert: stop after this many messages (retrained or skipped)")
    parser.add_argument("--timeout-s", type=float,
                        help="with --on-alert: stop after this many seconds (default: run until stopped)")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.once and (args.max_alerts is not None or args.timeout_s is not None or args.group_id):
        parser.error("--max-alerts, --timeout-s and --group-id apply to --on-alert")
    if args.max_alerts is not None and args.max_alerts < 1:
        parser.error("--max-alerts: expected at least 1")
    if args.timeout_s is not None and args.timeout_s <= 0:
        parser.error("--timeout-s: expected seconds > 0")


def _run(ctx: JobContext) -> None:
    a, uc = ctx.args, ctx.uc
    if a.once:
        out = run(ctx.spark, ctx.platform, uc, reason=a.reason, force=a.force)
        log.info("pipeline %s: %s", uc.name, out.skipped or f"new challenger v{out.version}")
        return
    handled = run_on_alert(ctx.spark, ctx.platform, uc, group_id=a.group_id, max_alerts=a.max_alerts,
                           timeout_s=a.timeout_s, force=a.force)
    log.info("pipeline %s: %d alerts handled, %d retrains", uc.name, len(handled),
             sum(h.action == "retrained" for h in handled))


main = entry_point("pipeline", __doc__, run=_run, arguments=_arguments, check=_check,
                   preflight=needs(kafka=True, mlflow=True))
