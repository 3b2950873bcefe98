"""Progressive delivery on evidence: shadow → canary steps → champion, or retired.

A challenger that passed the offline gate starts in shadow (``shadow_start`` in
``audit/<uc>_model_events``). From there each :func:`step` looks at the current stage
and decides on live evidence::

    shadow ──▶ canary steps[0] ──▶ … ──▶ canary steps[-1] ──▶ champion (promote)
       └──────────────┴──── a guardrail trips, or significantly worse ──▶ retire

The stage is the routing in effect (registered-model tags, as the scoring query reads
them): ``shadow``, or ``canary`` at a share; a share set by hand with ``driftline route``
is taken as it is and the next step is the first configured share above it. The stage
started at the newest audit row that changed it: ``shadow_start`` or ``ramp`` of the
challenger version, a ``route`` (by hand, or the ramp's own), a ``register`` of the
version or a ``promote``.

**Evidence.** The scoring query scores every event with both models in shadow and in
canary (:func:`driftline.scoring.route_and_score`: routes ``champion``/``shadow`` and
``control``/``challenger``), so the comparison is paired, on the same events. The
predictions scored since the stage start (``scoring_time``; Delta skips older files) are
joined with their labels, read from ``<uc>.labels`` in Kafka from the stage start minus
``label_lookback`` (Spark's ``startingTimestamp``: the read does not grow with history).
The test (``delivery.test``: ``delong`` for binary labels, ``paired_abs_error`` for
regression, or ``bootstrap``) is a one-sided non-inferiority test of
``H0: challenger worse by margin or more`` (:mod:`driftline.evidence`).

**Error rate, however often ``step`` runs.** Looking again at growing data and advancing
at the first look that passes would raise the error rate above ``alpha``. So the test
runs on fixed looks: look ``k`` (k = 1, 2, …) uses the first labelled events of the stage
in label-time order, as many as it takes to reach ``min_labels · 2^(k−1)`` events and
``min_positives · 2^(k−1)`` positives and negatives (binary), at level ``alpha / 2^k``.
The levels sum to ``alpha`` (a union bound), so at each stage a challenger worse than the
champion by ``margin`` or more advances with probability at most ``alpha``, and a
re-evaluation of the same look gives the same answer (idempotent). Before look 1 the
step holds and says how many labelled events and positives are still needed.

**Guardrails** (``delivery.guardrails``) roll the challenger back at once, on every
labelled event of the stage (no test): its metric worse than the champion's by more than
``metric_drop`` (once look 1 has its events); its null-prediction rate above the
champion's by more than ``null_prediction_rate`` (all its rows of the stage); the stream's
quarantine rate, or its p95 event-to-prediction latency divided by the champion-only
baseline (the same length of time just before the challenger's ``shadow_start``), above
``quarantine_rate`` / ``latency_ratio`` (skipped when there is no baseline).

**Steps.** ``hold`` (nothing changes); ``advance`` to the next canary share
(``set_routing`` + audit ``ramp``); ``promote`` after the last step (the champion alias,
audit ``promote``, routing back to ``champion``: the next challenger starts in shadow
again); ``retire`` (routing ``champion``, challenger alias removed, audit ``retire``).
Every audit row carries the evidence in ``metrics`` (each model's metric, difference, SE,
bound, p-value, n, positives, share, look, alpha) and a readable ``reason``; every
evaluation writes both models' rows to ``monitoring/<uc>_delivery``. A new stage starts
at its own audit row and needs evidence gathered after it, so running ``step`` twice on
the same evidence never advances twice.

Example::

    decision = step(spark, platform, uc)     # or evaluate(...) to look without acting
    decision.action, decision.reason         # 'advance', 'not worse: roc_auc 0.861 vs 0.858 ...'

``driftline deliver --usecase fraud [--watch] [--json]`` runs it from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from driftline import catalog, evidence
from driftline.catalog import DELIVERY_SCHEMA
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.sections import DeliverySpec
from driftline.delta import is_delta_table, latest_version, read_delta, write_delta
from driftline.errors import ConfigError
from driftline.timing import Laps

log = logging.getLogger(__name__)

Action = Literal["idle", "hold", "advance", "promote", "retire"]
STAGE_ROWS = ("shadow_start", "ramp")
# labels of events scored in a stage may have arrived (in Kafka) a little before it started
LABEL_LOOKBACK = timedelta(hours=1)
CHAMPION_ROUTES = ("champion", "control")
CHALLENGER_ROUTES = ("challenger", "shadow")


def delivery_path(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.path(platform, "delivery", uc)


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """Where the challenger is: ``shadow`` (share 0) or ``canary`` at ``share``, since ``started``."""

    mode: str
    share: float
    started: datetime | None

    @property
    def label(self) -> str:
        return "shadow" if self.mode == "shadow" else f"canary {self.share:.0%}"


def next_stage(steps: tuple[float, ...], stage: Stage) -> tuple[str, float | None]:
    """``("canary", share)`` of the next step, or ``("champion", None)`` after the last.

        >>> next_stage((0.05, 0.25), Stage("shadow", 0.0, None))
        ('canary', 0.05)
        >>> next_stage((0.05, 0.25), Stage("canary", 0.1, None))   # a share set by hand
        ('canary', 0.25)
        >>> next_stage((0.05, 0.25), Stage("canary", 0.25, None))
        ('champion', None)
    """
    above = [s for s in steps if stage.mode == "shadow" or s > stage.share + 1e-9]
    return ("canary", above[0]) if above else ("champion", None)


def choose_test(uc: UseCaseConfig, spec: DeliverySpec) -> tuple[str, str]:
    """The test and the metric it compares: ``delong`` → ROC AUC, ``paired_abs_error`` → MAE,
    ``bootstrap`` → ``delivery.metric`` (default ROC AUC for binary labels, RMSE else)."""
    binary = uc.label.kind == "binary"
    test = spec.test or ("delong" if binary else "paired_abs_error")
    fixed = {"delong": "roc_auc", "paired_abs_error": "mae"}.get(test)
    metric = fixed or spec.metric or ("roc_auc" if binary else "rmse")
    if fixed and spec.metric not in (None, fixed):
        raise ConfigError(f"delivery.metric: test {test!r} compares {fixed}, got {spec.metric!r}; "
                          f"use test: bootstrap for another metric")
    if (test == "delong" or metric == "roc_auc") and not binary:
        raise ConfigError(f"delivery.test: {test!r} with {metric} needs a binary label, got {uc.label.kind}")
    if metric not in evidence.METRICS:
        raise ConfigError(f"delivery.metric: expected one of {sorted(evidence.METRICS)}, got {metric!r}")
    return test, metric


def stage_start(events: list[dict[str, Any]], challenger: int) -> datetime | None:
    """The time of the newest audit row that changed the stage of ``challenger`` (see the
    module docstring); ``events`` are :func:`driftline.registry.events_as_dicts` rows."""
    times = [e["event_time"] for e in events
             if (e["action"] in (*STAGE_ROWS, "register") and e["to_version"] == challenger)
             or e["action"] in ("route", "promote", "rollback")]
    return max(times) if times else None


def delivery_start(events: list[dict[str, Any]], challenger: int) -> datetime | None:
    """When ``challenger`` first took part in scoring: its first ``shadow_start``, else its registration."""
    for action in ("shadow_start", "register"):
        times = [e["event_time"] for e in events if e["action"] == action and e["to_version"] == challenger]
        if times:
            return min(times)
    return None


def under_evaluation(platform: PlatformConfig, uc: UseCaseConfig) -> int | None:
    """The challenger progressive delivery is evaluating now, or None: a ``challenger`` alias
    other than the champion, that entered shadow (a ``shadow_start`` row) and that routing still
    gives a part (shadow or canary; a promotion or a retirement routes ``champion``). A
    challenger the gate refused never has a ``shadow_start``. Retraining on an alert waits
    while there is one (:func:`driftline.pipelines.retrain.run_on_alert`): a second challenger
    would replace the first before the evidence on it is in.

    Example::

        under_evaluation(platform, load_usecase("fraud"))   # 2: v2 is in shadow or canary
    """
    from driftline.registry import CHALLENGER, CHAMPION, alias_version, client_for, model_name
    from driftline.scoring import current_routing, routing_spec

    client = client_for(platform)
    name = model_name(uc)
    champ, chall = alias_version(client, name, CHAMPION), alias_version(client, name, CHALLENGER)
    if chall is None or chall == champ:
        return None
    if current_routing(dict(client.get_registered_model(name).tags), routing_spec(uc)).mode == "champion":
        return None
    started = any(e["action"] == "shadow_start" and e["to_version"] == chall for e in audit_rows(platform, uc))
    return chall if started else None


def champion_since(platform: PlatformConfig, uc: UseCaseConfig) -> tuple[int, datetime] | None:
    """(version, when) of the latest change of champion in ``audit/<uc>_model_events`` (a
    promotion or a rollback, naive UTC), or None before the first one. An alert raised
    before that moment judged windows the previous champion scored (and the monitor's
    previous reference): retraining on it would answer a question about a model no longer
    serving (:func:`driftline.pipelines.retrain.run_on_alert` skips it).

    Example::

        champion_since(platform, load_usecase("fraud"))   # (2, datetime(2026, 12, 7, 20, 51))
    """
    changes = [r for r in audit_rows(platform, uc)
               if r["action"] in ("promote", "rollback") and r["to_version"] is not None and r["event_time"]]
    return (int(changes[-1]["to_version"]), changes[-1]["event_time"]) if changes else None


def scored_before(platform: PlatformConfig, uc: UseCaseConfig, when: datetime) -> datetime | None:
    """The newest event time among the predictions the scoring query wrote before ``when``
    (naive UTC), as aware UTC; None without any. After a change of champion at ``when``, the
    windows up to that event time hold events the previous champion served: the monitor,
    restarted on the new champion's reference, judges them too, but they say nothing about
    the new champion (read with delta-rs: called once per alert, never on a query's path)."""
    import pandas as pd

    from driftline.delta import arrow_table, local_table

    table = local_table(catalog.path(platform, "predictions", uc))
    if table is None:
        return None
    rows = arrow_table(table, ["event_time", "scoring_time"]).to_pandas()
    scoring = pd.to_datetime(rows["scoring_time"], utc=True)
    before = rows.loc[scoring < pd.Timestamp(when.replace(tzinfo=UTC) if when.tzinfo is None else when), "event_time"]
    if before.empty or before.isna().all():
        return None
    newest = pd.Timestamp(before.max())
    newest = newest.tz_localize(UTC) if newest.tzinfo is None else newest.tz_convert(UTC)
    return newest.to_pydatetime()


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class ModelRows:
    """One model's predictions of the stage: rows, null-prediction rate, metric on the labelled events."""

    version: int
    rows: int
    null_rate: float
    value: float


@dataclass(frozen=True)
class StageDecision:
    """What one evaluation found and what :func:`step` does (or did, ``applied``) about it."""

    usecase: str
    action: Action
    reason: str
    stage: str = "none"                 # shadow | canary | none
    share: float = 0.0
    next_stage: str | None = None       # canary | champion
    next_share: float | None = None
    champion_version: int | None = None
    challenger_version: int | None = None
    stage_start: datetime | None = None
    evaluated_at: datetime | None = None
    test: str = ""
    metric: str = ""
    look: int = 0
    alpha_look: float = 0.0
    labelled: int = 0                   # labelled events both models scored since the stage start
    positives: int | None = None
    labels_needed: int | None = None    # more labelled events before the next look
    positives_needed: int | None = None  # binary: more positives (or negatives, the rarer) for that look
    evidence: evidence.Evidence | None = None
    champion: ModelRows | None = None
    challenger: ModelRows | None = None
    guardrails: dict[str, float] = field(default_factory=dict)
    tripped: tuple[str, ...] = ()
    applied: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase of the step

    def audit_metrics(self) -> dict[str, float]:
        """The evidence as the audit row's ``metrics`` map."""
        out: dict[str, float] = {"share": self.share, "look": self.look, "alpha": self.alpha_look,
                                 "labelled": self.labelled}
        if self.positives is not None:
            out["positives"] = self.positives
        for who, rows in (("champion", self.champion), ("challenger", self.challenger)):
            if rows is not None:
                out[f"{who}_{self.metric}_all"] = rows.value
                out[f"{who}_null_rate"] = rows.null_rate
        ev = self.evidence
        if ev is not None:
            out.update({f"champion_{ev.metric}": ev.champion, f"challenger_{ev.metric}": ev.challenger,
                        "difference": ev.difference, "se": ev.se, "bound": ev.bound, "upper": ev.upper,
                        "p_value": ev.p_value, "n": ev.n, "margin": ev.margin})
        out.update({f"guardrail_{k}": v for k, v in self.guardrails.items()})
        return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("stage_start", "evaluated_at"):
            out[k] = None if out[k] is None else out[k].isoformat()
        out["tripped"] = list(self.tripped)
        return out

    def describe(self) -> str:
        """Several lines for people: the decision, then its evidence."""
        lines = [f"{self.usecase}: {self.action} ({self.stage}"
                 + (f" {self.share:g}" if self.stage == "canary" else "") + f"): {self.reason}"]
        if self.challenger_version is not None:
            lines.append(f"  champion v{self.champion_version}, challenger v{self.challenger_version}, "
                         f"stage since {self.stage_start}, {self.labelled} labelled events"
                         + (f" ({self.positives} positives)" if self.positives is not None else ""))
        ev = self.evidence
        if ev is not None:
            lines.append(f"  {ev.test} look {self.look} on {ev.n} events (alpha {self.alpha_look:.4g}): {ev.metric} "
                         f"champion {ev.champion:.4f}, challenger {ev.challenger:.4f}, difference {ev.difference:+.4f} "
                         f"(SE {ev.se:.4f}), lower bound of the gain {ev.bound:+.4f} vs -margin {-ev.margin:g}, "
                         f"p {ev.p_value:.3g}: {ev.verdict}")
        for name, value in self.guardrails.items():
            lines.append(f"  guardrail {name}: {value:.4g}" + (" TRIPPED" if name in self.tripped else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading the evidence


def audit_rows(platform: PlatformConfig, uc: UseCaseConfig) -> list[dict[str, Any]]:
    """``action, event_time`` (naive UTC) ``, to_version`` of every ``audit/<uc>_model_events`` row,
    read with delta-rs (a small table: no Spark job on the controller's path)."""
    from driftline.delta import local_table
    from driftline.registry import audit_path

    table = local_table(audit_path(platform, uc))
    if table is None:
        return []
    rows = table.to_pyarrow_table(columns=["action", "event_time", "to_version"]).to_pylist()
    for r in rows:
        t = r["event_time"]
        if t is not None and t.tzinfo is not None:
            r["event_time"] = t.astimezone(UTC).replace(tzinfo=None)
    return sorted(rows, key=lambda r: r["event_time"])


def read_labels(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, since: datetime) -> DataFrame:
    """``label_event_id, label, label_time`` from ``<uc>.labels``, read from the first record
    at or after ``since`` (Kafka timestamps) to the end, one row per event (the latest label)."""
    from driftline.monitoring import parse_labels

    ms = int(since.replace(tzinfo=since.tzinfo or UTC).timestamp() * 1000)
    raw = (
        spark.read.format("kafka").options(**platform.kafka.client_options("spark"))
        .option("subscribe", uc.topic("labels"))
        .option("startingTimestamp", str(ms))
        .option("startingOffsetsByTimestampStrategy", "latest")
        .option("endingOffsets", "latest").option("failOnDataLoss", "false").load()
    )
    labels = parse_labels(raw, uc)
    latest = labels.groupBy("label_event_id").agg(F.max_by(F.struct("label", "label_time"), "label_time").alias("l"))
    return latest.select("label_event_id", F.col("l.label").alias("label"), F.col("l.label_time").alias("label_time"))


def _stage_predictions(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, since: datetime,
                       until: datetime) -> DataFrame | None:
    from driftline.scoring import predictions_path

    path = predictions_path(platform, uc)
    # a listing of the table's log, not Spark's cached DeltaLog: the scoring query may have
    # created the table after this session first looked for it
    if latest_version(spark, path) is None:
        return None
    return read_delta(spark, path).where((F.col("scoring_time") >= F.lit(since)) & (F.col("scoring_time") <= F.lit(until)))


def _model_rows_filter(champion: int, challenger: int) -> Column:
    """The champion's rows (routes champion, control) and the challenger's (challenger, shadow)."""
    return ((F.col("model_version") == champion) & F.col("route").isin(*CHAMPION_ROUTES)
            | (F.col("model_version") == challenger) & F.col("route").isin(*CHALLENGER_ROUTES))


def _stream_rates(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, preds: DataFrame | None,
                  since: datetime, until: datetime) -> tuple[int, float, float]:
    """``(events, quarantine rate, p95 latency ms)`` of the scoring query between two times
    (``preds``: the predictions table, or a part of it holding that period)."""
    from driftline.scoring import quarantine_stream_path

    events, latency = 0, math.nan
    if preds is not None:
        served = preds.where(
            F.col("served") & (F.col("scoring_time") >= F.lit(since)) & (F.col("scoring_time") < F.lit(until)))
        ms = (F.col("scoring_time").cast("double") - F.col("kafka_timestamp").cast("double")) * 1000
        row = served.agg(F.count(F.lit(1)).alias("n"), F.percentile_approx(ms, 0.95).alias("p95")).first()
        events = int(row["n"]) if row else 0
        latency = float(row["p95"]) if row and row["p95"] is not None else math.nan
    if not events:
        return 0, math.nan, latency
    quarantined = 0
    qpath = quarantine_stream_path(platform, uc)
    if latest_version(spark, qpath) is not None:
        quarantined = read_delta(spark, qpath).where(
            (F.col("quarantined_at") >= F.lit(since)) & (F.col("quarantined_at") < F.lit(until))).count()
    return events, quarantined / (events + quarantined), latency


def _look(y: np.ndarray, spec: DeliverySpec, binary: bool) -> tuple[int, int, int | None, int | None]:
    """``(k, size, labels_needed, positives_needed)``: the largest look whose sample (the
    smallest prefix reaching its counts) is complete, its size, and what the next look still needs."""
    n = len(y)
    pos = np.cumsum(y > 0.5) if binary else None
    neg = np.cumsum(y <= 0.5) if binary else None
    k, size = 0, 0
    while True:
        want_n, want_p = spec.min_labels * 2 ** k, spec.min_positives * 2 ** k
        ok = np.arange(1, n + 1) >= want_n
        if binary:
            assert pos is not None and neg is not None
            ok &= (pos >= want_p) & (neg >= want_p)
        hits = np.flatnonzero(ok)
        if len(hits) == 0:
            need_n = max(0, want_n - n)
            need_p = None
            if binary:
                have_p, have_n = (int(pos[-1]), int(neg[-1])) if pos is not None and neg is not None and n else (0, 0)
                need_p = max(0, want_p - have_p, want_p - have_n)
            return k, size, need_n, need_p
        k, size = k + 1, int(hits[0]) + 1


def evaluate(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, now: datetime | None = None,
             *, label_lookback: timedelta = LABEL_LOOKBACK) -> StageDecision:
    """The evidence of the current stage and the step it calls for, without acting on it
    (see the module docstring). ``now`` (naive UTC, default: now) bounds the predictions read.

    Example::

        evaluate(spark, platform, uc).describe()
    """
    from driftline.registry import CHALLENGER, CHAMPION, alias_version, client_for, model_name
    from driftline.scoring import current_routing, routing_spec

    spec = uc.delivery
    clock = Laps()
    now = now or datetime.now(UTC).replace(tzinfo=None)
    client = client_for(platform)
    name = model_name(uc)
    champ, chall = alias_version(client, name, CHAMPION), alias_version(client, name, CHALLENGER)
    base: dict[str, Any] = {"usecase": uc.name, "champion_version": champ, "challenger_version": chall,
                            "evaluated_at": now, "timings": clock.laps}
    if champ is None or chall is None or chall == champ:
        return StageDecision(action="idle", reason="no challenger besides the champion", **base)
    routing = current_routing(dict(client.get_registered_model(name).tags), routing_spec(uc))
    if routing.mode == "champion":
        return StageDecision(action="idle", reason=f"challenger v{chall} takes no part in scoring (routing champion); "
                             "`driftline route --mode shadow` puts it in shadow", **base)
    audit = audit_rows(platform, uc)
    clock.lap("registry and audit")
    stage = Stage(routing.mode, routing.share if routing.mode == "canary" else 0.0, stage_start(audit, chall))
    nxt, nxt_share = next_stage(spec.steps, stage)
    test, metric = choose_test(uc, spec)
    binary = uc.label.kind == "binary"
    started = stage.started or datetime(1970, 1, 1)
    base.update(stage=stage.mode, share=stage.share, next_stage=nxt, next_share=nxt_share, stage_start=stage.started,
                test=test, metric=metric)

    # ---- predictions of the stage: per model rows and nulls; labelled pairs of scores
    begun = delivery_start(audit, chall)
    baseline = (begun - (now - started), begun) if begun is not None and stage.started is not None else None
    preds = _stage_predictions(spark, platform, uc, min(started, baseline[0]) if baseline else started, now)
    counts: dict[int, tuple[int, int]] = {}
    pairs = np.empty((0, 3))
    rates: tuple[tuple[int, float, float], tuple[int, float, float]] | None = None
    if preds is not None:
        preds = preds.persist()
        try:
            scored = preds.where(F.col("model_version").isin(champ, chall) & (F.col("scoring_time") >= F.lit(started)))
            null = F.col("score").isNull() | F.col("prediction").isNull()
            for r in (scored.where(_model_rows_filter(champ, chall))
                      .groupBy("model_version").agg(F.count(F.lit(1)).alias("n"), F.count_if(null).alias("nulls"))
                      .collect()):
                counts[int(r["model_version"])] = (int(r["n"]), int(r["nulls"]))
            clock.lap("predictions")
            is_a = (F.col("model_version") == champ) & F.col("route").isin(*CHAMPION_ROUTES)
            is_b = (F.col("model_version") == chall) & F.col("route").isin(*CHALLENGER_ROUTES)
            per_event = (scored.groupBy("event_id")
                         .agg(F.max(F.when(is_a, F.col("score"))).alias("a"), F.max(F.when(is_b, F.col("score"))).alias("b"))
                         .where(F.col("a").isNotNull() & F.col("b").isNotNull()))
            labels = read_labels(spark, platform, uc, started - label_lookback)
            joined = (per_event.join(labels, F.col("event_id") == F.col("label_event_id"))
                      .select("event_id", "a", "b", "label", "label_time").collect())
            clock.lap("labels and pairs")
            if baseline is not None and now > started:
                before = _stream_rates(spark, platform, uc, preds, *baseline)
                if before[0]:  # a champion-only baseline exists
                    rates = before, _stream_rates(spark, platform, uc, preds, started, now)
                clock.lap("baseline")
        finally:
            preds.unpersist()
        joined.sort(key=lambda r: (r["label_time"], r["event_id"]))  # label arrival order: the looks' samples
        if joined:
            pairs = np.array([(r["label"], r["a"], r["b"]) for r in joined], dtype=np.float64)
    y, sa, sb = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    fn, higher = evidence.METRICS[metric]

    def rows_of(version: int) -> ModelRows:
        n, nulls = counts.get(version, (0, 0))
        scores = sa if version == champ else sb
        value = float(fn(y, scores)) if len(y) and (not binary or 0 < y.sum() < len(y)) else math.nan
        return ModelRows(version, n, nulls / n if n else math.nan, value)

    champion_rows, challenger_rows = rows_of(champ), rows_of(chall)
    k, size, need_n, need_p = _look(y, spec, binary)
    alpha_k = spec.alpha / 2 ** k if k else 0.0
    base.update(look=k, alpha_look=alpha_k, labelled=len(y), positives=int(y.sum()) if binary else None,
                labels_needed=need_n, positives_needed=need_p, champion=champion_rows, challenger=challenger_rows)

    # ---- guardrails
    g = spec.guardrails
    guard: dict[str, float] = {}
    tripped: list[str] = []
    if champion_rows.rows and challenger_rows.rows:
        guard["null_rate_increase"] = challenger_rows.null_rate - champion_rows.null_rate
        if guard["null_rate_increase"] > g.null_prediction_rate:
            tripped.append("null_rate_increase")
    if k >= 1:
        sign = 1.0 if higher else -1.0
        guard["metric_drop"] = sign * (champion_rows.value - challenger_rows.value)
        if guard["metric_drop"] > g.metric_drop:
            tripped.append("metric_drop")
    if rates is not None:
        (_, q_before, lat_before), (_, q_now, lat_now) = rates
        if not math.isnan(q_now) and not math.isnan(q_before):
            guard["quarantine_rate_increase"] = q_now - q_before
            if guard["quarantine_rate_increase"] > g.quarantine_rate:
                tripped.append("quarantine_rate_increase")
        if g.latency_ratio is not None and lat_before > 0 and not math.isnan(lat_now):
            guard["latency_ratio"] = lat_now / lat_before
            if guard["latency_ratio"] > g.latency_ratio:
                tripped.append("latency_ratio")
    base.update(guardrails=guard, tripped=tuple(tripped))

    # ---- the test on look k
    ev = None
    if k >= 1:
        ev = evidence.compare(test, y[:size], sa[:size], sb[:size], metric=metric, margin=spec.margin, alpha=alpha_k,
                              samples=spec.bootstrap_samples, seed=k)
        base["evidence"] = ev
        clock.lap("test")
    target = "champion" if nxt == "champion" else f"canary {nxt_share:g}"
    if tripped:
        limits = {"null_rate_increase": g.null_prediction_rate, "metric_drop": g.metric_drop,
                  "quarantine_rate_increase": g.quarantine_rate, "latency_ratio": g.latency_ratio}
        what = "; ".join(f"{t} {guard[t]:.4g} > {limits[t]:g}" for t in tripped)
        return StageDecision(action="retire", reason=f"guardrail tripped in {stage.label}: {what}", **base)
    if ev is None:
        need = f"{need_n} more labelled events" + (f" and {need_p} more of the rarer class" if need_p else "")
        return StageDecision(action="hold", reason=f"{stage.label}: {len(y)} labelled events both models scored; "
                             f"look 1 needs {spec.min_labels}" + (f" with {spec.min_positives} positives"
                                                                  if binary else "") + f": {need}", **base)
    versus = (f"{metric} {ev.challenger:.4f} vs {ev.champion:.4f} on {ev.n} events ({ev.test} look {k}, "
              f"gain {ev.gain:+.4f}, SE {ev.se:.4f}, lower bound {ev.bound:+.4f}, p {ev.p_value:.3g}, "
              f"alpha {alpha_k:.4g}, margin {spec.margin:g})")
    if ev.verdict == "worse":
        return StageDecision(action="retire", reason=f"significantly worse in {stage.label}: {versus}", **base)
    if ev.verdict == "not_worse":
        action: Action = "promote" if nxt == "champion" else "advance"
        return StageDecision(action=action, reason=f"not worse in {stage.label}, to {target}: {versus}", **base)
    more = evidence.labels_needed(ev)
    return StageDecision(action="hold", reason=f"inconclusive in {stage.label}: {versus}; look {k + 1} at "
                         f"{spec.min_labels * 2 ** k} labelled events" + (f" (about {more} needed at this gain)"
                                                                          if more else ""), **base)


# --------------------------------------------------------------------------- acting on it


def _record_evaluation(spark: SparkSession, platform: PlatformConfig, d: StageDecision) -> None:
    ev = d.evidence
    rows = []
    for who, m, routes in (("champion", d.champion, CHAMPION_ROUTES), ("challenger", d.challenger, CHALLENGER_ROUTES)):
        if m is None:
            continue
        rows.append((
            d.evaluated_at, d.stage, float(d.share), d.stage_start, who, int(m.version), "+".join(routes), int(m.rows),
            None if math.isnan(m.null_rate) else m.null_rate, int(d.labelled), d.positives, d.metric,
            None if math.isnan(m.value) else m.value, d.test, int(d.look), int(ev.n) if ev else 0,
            ev.difference if ev else None, ev.se if ev else None, ev.bound if ev else None,
            ev.p_value if ev else None, float(d.alpha_look), float(ev.margin if ev else 0.0),
            ev.verdict if ev else None, d.action, d.reason,
        ))
    if rows:
        write_delta(spark.createDataFrame(rows, DELIVERY_SCHEMA), catalog.path(platform, "delivery", d.usecase),
                    mode="append")


def step(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, now: datetime | None = None
         ) -> StageDecision:
    """Evaluate the stage (:func:`evaluate`) and apply the decision: hold, advance to the next
    canary share (audit ``ramp``), promote after the last step (audit ``promote``, routing back
    to ``champion``), or retire (routing ``champion``, challenger alias removed, audit
    ``retire``). The evaluation goes to ``monitoring/<uc>_delivery`` (not when idle).

    Example::

        d = step(spark, platform, uc)
        print(d.describe())
    """
    from driftline.registry import (
        CHALLENGER,
        _set_champion,
        audit_path,
        client_for,
        model_name,
        record_event,
    )
    from driftline.scoring import set_routing

    d = evaluate(spark, platform, uc, now)
    if d.action == "idle":
        return d
    clock = Laps()
    _record_evaluation(spark, platform, d)
    clock.lap("record")
    d.timings.update({k: v for k, v in clock.laps.items()})
    if d.action == "hold":
        log.info("delivery %s: hold in %.1fs (%s): %s", uc.name, sum(d.timings.values()), _laps(d), d.reason)
        return d
    assert d.challenger_version is not None
    client = client_for(platform)
    name = model_name(uc)
    run_id = client.get_model_version(name, str(d.challenger_version)).run_id
    metrics = d.audit_metrics()
    if d.action == "advance":
        assert d.next_share is not None
        set_routing(spark, platform, uc, "canary", d.next_share)
        record_event(spark, audit_path(platform, uc), action="ramp", model=name, from_version=d.champion_version,
                     to_version=d.challenger_version, reason=d.reason, metrics={**metrics, "next_share": d.next_share},
                     run_id=run_id)
    elif d.action == "promote":
        _set_champion(spark, platform, uc, d.challenger_version, action="promote",
                      reason=f"progressive delivery: {d.reason}", metrics=metrics)
        set_routing(spark, platform, uc, "champion", None)
    elif d.action == "retire":
        set_routing(spark, platform, uc, "champion", None)
        try:
            client.delete_registered_model_alias(name, CHALLENGER)
        except Exception as e:  # noqa: BLE001 - an alias already gone is what we want
            log.warning("delivery %s: removing alias %s: %s", name, CHALLENGER, e)
        record_event(spark, audit_path(platform, uc), action="retire", model=name, from_version=d.champion_version,
                     to_version=d.challenger_version, reason=d.reason, metrics=metrics, run_id=run_id)
    clock.lap("apply")
    d.timings.update(clock.laps)
    log.info("delivery %s: %s in %.1fs (%s): %s", uc.name, d.action, sum(d.timings.values()), _laps(d), d.reason)
    return dataclasses.replace(d, applied=True)


def _laps(d: StageDecision) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in d.timings.items())


def read_evaluations(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> list[dict[str, Any]]:
    """The rows of ``monitoring/<uc>_delivery``, oldest first (small table), for the CLI and tests."""
    path = delivery_path(platform, uc)
    if not is_delta_table(spark, path):
        return []
    return [r.asDict() for r in read_delta(spark, path).orderBy("evaluated_at", "model").collect()]


def to_json(decision: StageDecision) -> str:
    return json.dumps(decision.as_dict(), default=str, sort_keys=True)
