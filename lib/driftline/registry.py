"""The model registry: versions of ``<uc>-model``, aliases ``challenger`` and
``champion``, the quality gate, promotion and rollback, all audited.

Every change is a row in the Delta table ``audit/<uc>_model_events``
(:data:`AUDIT_COLUMNS`). Rollback history lives in a model-version tag: when a
version becomes champion it records the version it replaced in
``driftline.previous_champion``, so :func:`rollback` walks back one step per
call, as often as there is history. A binary model's decision threshold (fixed, or
chosen on its validation split) is the version tag ``driftline.decision_threshold``,
written once at registration and read by batch and streaming scoring
(:func:`version_threshold`), so a champion and a challenger each decide at their own.
A gate pass promotes, except under ``delivery.mode: progressive`` (the default) when a
champion is in place: the challenger then starts in shadow (:func:`start_shadow`) and
progressive delivery (:mod:`driftline.delivery`) takes it from there::

    v = register_version(spark, platform, uc, run_id, threshold=0.27)   # alias challenger
    decision = gate_and_promote(spark, platform, uc, v, test_df, spec)  # .action: promote | shadow_start | ...
    rollback(spark, platform, uc)                               # champion back to the previous one
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from driftline import catalog
from driftline.catalog import AUDIT_SCHEMA
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.sections import GateSpec, ModelSpec
from driftline.delta import is_delta_table, read_delta, write_delta
from driftline.errors import ConfigError, RegistryError, UsageError
from driftline.tracking import MODEL_ARTIFACT, SPEC_ARTIFACT, configure_mlflow
from driftline.training import (
    evaluate,
    gate_metric,
    is_higher_better,
    prepare,
    read_training_table,
    split_dataset,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_TAG = "driftline.previous_champion"
THRESHOLD_TAG = "driftline.decision_threshold"
# the threshold-dependent test metrics the gate reports for both models (binary labels)
DECISION_METRICS = ("threshold", "precision", "recall", "f1")
# shadow_start: a challenger that passed the offline gate starts in shadow (delivery.mode progressive);
# ramp: progressive delivery moved it to the next canary share on evidence; retire: delivery took it
# out of traffic (a guardrail tripped, or the evidence says it is worse).
ACTIONS = frozenset({"register", "promote", "rollback", "gate_refused", "route", "retrain_triggered",
                     "shadow_start", "ramp", "retire"})


def model_name(uc: UseCaseConfig) -> str:
    """``<uc>-model``, the registered model of a use case."""
    return f"{uc.name}-model"


def audit_path(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.path(platform, "model_events", uc)


def client_for(platform: PlatformConfig) -> MlflowClient:
    """An MlflowClient on the platform's tracking/registry store (also set as MLflow's default)."""
    uri = configure_mlflow(platform)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --------------------------------------------------------------------------- audit


def record_event(
    spark: SparkSession,
    path: str,
    *,
    action: str,
    model: str,
    from_version: int | None = None,
    to_version: int | None = None,
    reason: str = "",
    metrics: dict[str, float] | None = None,
    run_id: str | None = None,
    when: datetime | None = None,
) -> None:
    """Append one row to the audit Delta table at ``path``.

    Example::

        record_event(spark, audit_path(platform, uc), action="promote", model="fraud-model",
                     from_version=1, to_version=2, reason="gate passed")
    """
    if action not in ACTIONS:
        raise UsageError(f"action: expected one of {sorted(ACTIONS)}, got {action!r}")
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and not math.isnan(float(v))}
    row = (when or datetime.now(UTC).replace(tzinfo=None), action, model, from_version, to_version, reason,
           clean, run_id)
    write_delta(spark.createDataFrame([row], AUDIT_SCHEMA), path, mode="append")
    log.info("audit %s %s: %s -> %s (%s)", model, action, from_version, to_version, reason)


def read_events(spark: SparkSession, path: str) -> DataFrame:
    """The audit table ordered by time (an empty frame when nothing was recorded yet)."""
    if not is_delta_table(spark, path):
        return spark.createDataFrame([], AUDIT_SCHEMA)
    return read_delta(spark, path).orderBy("event_time")


# --------------------------------------------------------------------------- versions and aliases


def alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    """The version behind ``alias``, or None when the alias (or the model) does not exist."""
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register_version(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, run_id: str,
    metrics: dict[str, float] | None = None, threshold: float | None = None,
) -> int:
    """Register the run's model as a new version of ``<uc>-model``, alias it
    ``challenger`` and audit ``register``. Returns the version number.

    ``threshold`` (default: the run's ``decision_threshold`` metric, if it logged one)
    becomes the version's tag ``driftline.decision_threshold``, set before the alias
    moves, so no scorer sees the version without it.

    Example::

        version = register_version(spark, platform, uc, run.info.run_id, threshold=result.threshold)
    """
    if not run_id:
        raise UsageError("run_id: expected an MLflow run id, got an empty value")
    if threshold is not None and not 0 < threshold < 1:
        raise UsageError(f"threshold: expected a decision threshold in (0, 1), got {threshold}")
    client = client_for(platform)
    name = model_name(uc)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"driftline model of use case {uc.name}")
    if threshold is None:
        threshold = client.get_run(run_id).data.metrics.get("decision_threshold")
    tags = {} if threshold is None else {THRESHOLD_TAG: repr(float(threshold))}
    mv = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name, tags=tags)
    version = int(mv.version)
    previous = alias_version(client, name, CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    record_event(spark, audit_path(platform, uc), action="register", model=name, from_version=previous,
                 to_version=version, reason=f"registered from run {run_id}; alias {CHALLENGER}",
                 metrics=metrics, run_id=run_id)
    return version


def list_versions(platform: PlatformConfig, uc: UseCaseConfig) -> list[dict[str, Any]]:
    """Every version of ``<uc>-model``, newest first: version, aliases, run id, test metrics.

    Example::

        list_versions(platform, uc)[0]  # {'version': 3, 'aliases': ['challenger'], 'run_id': ..., ...}
    """
    client = client_for(platform)
    name = model_name(uc)
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(int(v), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{name}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            run = client.get_run(mv.run_id)
            metrics = {k[len("test_"):]: v for k, v in run.data.metrics.items() if k.startswith("test_")}
        out.append({
            "version": int(mv.version), "aliases": sorted(by_version.get(int(mv.version), [])),
            "run_id": mv.run_id, "created": mv.creation_timestamp, "metrics": metrics,
            "threshold": _tag_threshold(mv.tags),
        })
    return sorted(out, key=lambda r: -r["version"])


def _tag_threshold(tags: dict[str, str] | None) -> float | None:
    text = (tags or {}).get(THRESHOLD_TAG)
    return None if text is None else float(text)


def version_threshold(client: MlflowClient, uc: UseCaseConfig, version: int) -> float:
    """The decision threshold of ``version``: its ``driftline.decision_threshold`` tag, or for
    a version registered without one, the use case's fixed ``model.threshold`` (a rule's
    ``fallback``). Tags never change after registration, so callers may cache it with the model.

    Example::

        version_threshold(client_for(platform), uc, 3)  # 0.2714...
    """
    mv = client.get_model_version(model_name(uc), str(version))
    tagged = _tag_threshold(mv.tags)
    if tagged is not None:
        return tagged
    return uc.model.default_threshold if uc.model is not None else 0.5


def load_alias(platform: PlatformConfig, uc: UseCaseConfig, alias: str = CHAMPION) -> tuple[PipelineModel, int]:
    """Load the Spark model behind ``alias`` (natively, a PipelineModel) and its version.

    Example::

        model, version = load_alias(platform, uc, "champion")
        model.transform(df)
    """
    import mlflow.spark

    client = client_for(platform)
    name = model_name(uc)
    version = alias_version(client, name, alias)
    if version is None:
        raise RegistryError(f"alias: model {name} has no version with alias {alias!r}")
    # by version, not by alias: the alias may move between the two calls
    model = mlflow.spark.load_model(f"models:/{name}/{version}")
    return model, version


# --------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger may become champion, and why."""

    passed: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # what gate_and_promote did: "promote" (champion now), "shadow_start" (passed, in shadow:
    # delivery.mode progressive with a champion in place), "gate_refused"; "" from gate_decision
    action: str = ""

    @property
    def promoted(self) -> bool:
        """Whether the version became champion (a pass that went to shadow did not)."""
        return self.action == "promote"

    def metrics(self) -> dict[str, float]:
        """The compared metric of both models, plus ``extra`` (binary: each model's threshold,
        precision, recall and F1 on the test data, ``challenger_f1`` ...)."""
        out = {f"challenger_{self.metric}": self.challenger}
        if self.champion is not None:
            out[f"champion_{self.metric}"] = self.champion
        return {**out, **self.extra}


def gate_decision(metric: str, challenger: float, champion: float | None, gate: GateSpec) -> GateDecision:
    """The quality gate as a pure function of the two metrics on the same test data.

    The challenger passes when its metric is a number, within ``gate.min``/``gate.max``,
    and no worse than the champion's by more than ``gate.tolerance``::

        >>> gate_decision("roc_auc", 0.80, 0.81, GateSpec(tolerance=0.005)).passed
        False
        >>> gate_decision("rmse", 4.02, 4.0, GateSpec(tolerance=0.05)).passed
        True
    """
    if not isinstance(gate, GateSpec):
        raise TypeError(f"gate: expected GateSpec, got {type(gate).__name__}")
    higher = is_higher_better(metric)

    def refuse(reason: str) -> GateDecision:
        return GateDecision(False, reason, metric, challenger, champion)

    if challenger is None or math.isnan(challenger):
        return refuse(f"challenger {metric} is NaN")
    if gate.min is not None and challenger < gate.min:
        return refuse(f"challenger {metric} {challenger:.6g} is below the minimum {gate.min}")
    if gate.max is not None and challenger > gate.max:
        return refuse(f"challenger {metric} {challenger:.6g} is above the maximum {gate.max}")
    if champion is None or math.isnan(champion):
        return GateDecision(True, f"no comparable champion; {metric} {challenger:.6g} passes the checks",
                            metric, challenger, champion)
    if higher:
        ok = challenger >= champion - gate.tolerance
        cmp = "at least" if ok else "below"
    else:
        ok = challenger <= champion + gate.tolerance
        cmp = "at most" if ok else "above"
    reason = (f"challenger {metric} {challenger:.6g} is {cmp} champion's {champion:.6g} "
              f"(tolerance {gate.tolerance}) on the same test data")
    return GateDecision(ok, reason, metric, challenger, champion)


def evaluate_gate(
    platform: PlatformConfig, uc: UseCaseConfig, spec: ModelSpec, test_df: DataFrame,
    challenger_metrics: dict[str, float],
) -> tuple[GateDecision, int | None]:
    """Re-score the current champion on ``test_df`` (the challenger's test set) at the
    champion's own decision threshold and decide; returns the decision and the champion
    version (None if there is none). For binary labels the decision also reports both
    models' threshold, precision, recall and F1 (``challenger_metrics`` were computed at the
    challenger's threshold)."""
    client = client_for(platform)
    name = model_name(uc)
    metric = gate_metric(spec, uc.label.kind)
    if metric not in challenger_metrics:
        raise ConfigError(f"model.gate.metric: {metric!r} is not among the test metrics {sorted(challenger_metrics)}")
    champion_version = alias_version(client, name, CHAMPION)
    champion_value: float | None = None
    champion_metrics: dict[str, float] = {}
    if champion_version is not None:
        champion_model, champion_version = load_alias(platform, uc, CHAMPION)
        champion_metrics = evaluate(champion_model, test_df, uc.label.kind, uc.label.field,
                                    version_threshold(client, uc, champion_version))
        champion_value = champion_metrics[metric]
    decision = gate_decision(metric, float(challenger_metrics[metric]), champion_value, spec.gate)
    if uc.label.kind == "binary":
        extra = {f"{who}_{k}": float(m[k]) for who, m in (("challenger", challenger_metrics),
                                                         ("champion", champion_metrics))
                 for k in DECISION_METRICS if k in m}
        decision = dataclasses.replace(decision, extra={**extra, **decision.extra})
    return decision, champion_version


def _set_champion(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int, *, action: str, reason: str,
    metrics: dict[str, float] | None = None, record_previous: bool = True,
) -> int | None:
    client = client_for(platform)
    name = model_name(uc)
    current = alias_version(client, name, CHAMPION)
    if record_previous and current is not None and current != version:
        client.set_model_version_tag(name, str(version), PREVIOUS_TAG, str(current))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    run_id = client.get_model_version(name, str(version)).run_id
    record_event(spark, audit_path(platform, uc), action=action, model=name, from_version=current,
                 to_version=version, reason=reason, metrics=metrics, run_id=run_id)
    return current


def gate_and_promote(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int, test_df: DataFrame,
    spec: ModelSpec, challenger_metrics: dict[str, float], *, direct: bool | None = None,
) -> GateDecision:
    """Run the gate for ``version`` against the champion on ``test_df``. A refusal audits
    ``gate_refused`` and leaves the champion alone. A pass promotes it, unless the use case's
    ``delivery.mode`` is ``progressive`` (the default) and a champion is already in place: then
    the version goes to shadow instead (:func:`start_shadow`: alias ``challenger``, routing
    ``shadow``, audited ``shadow_start``) and progressive delivery decides on live evidence.
    ``direct=True`` promotes on a pass whatever the mode (``driftline promote``, the manual
    override); None follows ``delivery.mode``. ``decision.action`` says which happened.

    Example::

        decision = gate_and_promote(spark, platform, uc, 3, splits.test, spec, result.metrics)
        decision.action   # 'shadow_start' (passed, champion unchanged), 'promote' or 'gate_refused'
    """
    decision, champion = evaluate_gate(platform, uc, spec, test_df, challenger_metrics)
    name = model_name(uc)
    _log_gate(client_for(platform), name, version, decision)
    progressive = not direct if direct is not None else uc.delivery.mode == "progressive"
    if decision.passed and progressive and champion is not None and champion != version:
        decision = dataclasses.replace(decision, action="shadow_start")
        start_shadow(spark, platform, uc, version, decision)
    elif decision.passed:
        decision = dataclasses.replace(decision, action="promote")
        _set_champion(spark, platform, uc, version, action="promote", reason=f"gate passed: {decision.reason}",
                      metrics=decision.metrics())
    else:
        decision = dataclasses.replace(decision, action="gate_refused")
        client = client_for(platform)
        run_id = client.get_model_version(name, str(version)).run_id
        record_event(spark, audit_path(platform, uc), action="gate_refused", model=name, from_version=champion,
                     to_version=version, reason=decision.reason, metrics=decision.metrics(), run_id=run_id)
    log.info("gate for %s v%d: %s", name, version, decision.reason)
    return decision


def start_shadow(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int, decision: GateDecision
) -> None:
    """Put ``version``, which passed the gate, in shadow: alias ``challenger`` (already its
    alias when it was just registered), routing ``shadow`` for the use case (registered-model
    tags a running scoring query reads at its next batch; audited ``route``), then audit
    ``shadow_start`` with the gate's metrics as evidence. The champion is not touched.

    Example::

        start_shadow(spark, platform, uc, 3, decision)   # v3 scored next to the champion, never served
    """
    from driftline.scoring import set_routing

    client = client_for(platform)
    name = model_name(uc)
    champion = alias_version(client, name, CHAMPION)
    if alias_version(client, name, CHALLENGER) != version:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    set_routing(spark, platform, uc, "shadow", None)
    versus = "" if decision.champion is None else f" vs champion {decision.champion:.4g}"
    reason = (f"gate passed ({decision.metric} {decision.challenger:.4g}{versus}): "
              "in shadow until delivery has evidence")
    run_id = client.get_model_version(name, str(version)).run_id
    record_event(spark, audit_path(platform, uc), action="shadow_start", model=name, from_version=champion,
                 to_version=version, reason=reason, metrics=decision.metrics(), run_id=run_id)


def _log_gate(client: MlflowClient, name: str, version: int, decision: GateDecision) -> None:
    """The gate's metrics (``gate_challenger_f1`` ...) and verdict into the challenger's run."""
    run_id = client.get_model_version(name, str(version)).run_id
    if not run_id:
        return
    now = int(time.time() * 1000)
    values = {**decision.metrics(), "passed": float(decision.passed)}
    client.log_batch(run_id, metrics=[Metric(f"gate_{k}", float(v), now, 0) for k, v in values.items()
                                      if v is not None and not math.isnan(float(v))])


def rebuild_test_set(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int
                         ) -> tuple[DataFrame, ModelSpec, dict[str, float]]:
    """Rebuild a registered version's test set from its run's lineage (Delta path,
    version, logged model spec); returns it with that spec and the run's test metrics.
    The table version stays readable while the model version is registered
    (:mod:`driftline.retention`, ``driftline vacuum``); a :class:`RegistryError` says so when
    it is not."""
    client = client_for(platform)
    mv = client.get_model_version(model_name(uc), str(version))
    if not mv.run_id:
        raise RegistryError(f"version: {model_name(uc)} v{version} has no run to rebuild its test set from")
    run = client.get_run(mv.run_id)
    params = run.data.params
    spec = ModelSpec.model_validate(mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{SPEC_ARTIFACT}"))
    try:
        df, _ = read_training_table(spark, params["data.path"], int(params["data.version"]))
        df.schema  # noqa: B018 - resolves the version now: an expired one fails here, with a clear message
    except Exception as e:  # an expired Delta version, vacuumed files, a moved table
        raise RegistryError(
            f"version: the training data of {model_name(uc)} v{version} ({params['data.path']} at Delta version "
            f"{params['data.version']}) is no longer readable ({str(e).strip().splitlines()[0][:200]}); "
            "`driftline vacuum` keeps the data of registered versions (see model.retention)") from e
    test = split_dataset(prepare(df, uc, spec), uc, spec.split).test
    metrics = {k[len("test_"):]: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return test, spec, metrics


def promote(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, version: int | None = None, *,
    force: bool = False, reason: str = "manual promotion",
) -> GateDecision | None:
    """Make ``version`` (default: the challenger) champion.

    Without ``force`` the gate runs first on the version's own test set, rebuilt
    from its lineage; with ``force`` it is skipped (audited as such). Returns the
    gate decision, or None when forced. A pass promotes whatever ``delivery.mode`` says:
    this is the manual override of progressive delivery.

    Example::

        promote(spark, platform, uc)                 # the challenger, through the gate
        promote(spark, platform, uc, 2, force=True)  # version 2, no questions asked
    """
    client = client_for(platform)
    name = model_name(uc)
    if version is None:
        version = alias_version(client, name, CHALLENGER)
        if version is None:
            raise RegistryError(f"version: {name} has no {CHALLENGER!r}; pass a version explicitly")
    try:
        client.get_model_version(name, str(version))
    except MlflowException as e:
        raise RegistryError(f"version: {name} has no version {version}") from e
    if force:
        _set_champion(spark, platform, uc, version, action="promote", reason=f"{reason} (forced, gate skipped)")
        return None
    test, spec, metrics = rebuild_test_set(spark, platform, uc, version)
    return gate_and_promote(spark, platform, uc, version, test, spec, metrics, direct=True)


def rollback(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, reason: str = "manual rollback"
             ) -> int:
    """Point ``champion`` back at the version it replaced; returns that version.

    Example::

        rollback(spark, platform, uc)  # e.g. 1, when version 2 had replaced version 1
    """
    client = client_for(platform)
    name = model_name(uc)
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    tags = client.get_model_version(name, str(current)).tags
    previous = tags.get(PREVIOUS_TAG)
    if not previous:
        raise RegistryError(f"{name} v{current} has no previous champion to roll back to")
    _set_champion(spark, platform, uc, int(previous), action="rollback", reason=reason, record_previous=False)
    return int(previous)


def events_as_dicts(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> list[dict[str, Any]]:
    """The audit rows as dicts (small table), oldest first, for the CLI and tests."""
    rows = read_events(spark, audit_path(platform, uc)).collect()
    return [{**r.asDict(), "metrics": dict(r["metrics"] or {})} for r in rows]


def format_versions(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`list_versions` output.

        >>> print(format_versions([{"version": 2, "aliases": ["champion"], "run_id": "abc", "metrics": {"rmse": 1.5}}]))
        version  aliases   run_id  metrics
        2        champion  abc     {"rmse": 1.5}
    """
    header = ("version", "aliases", "run_id", "metrics")
    body = [(str(r["version"]), ",".join(r["aliases"]) or "-", str(r["run_id"]),
             json.dumps({k: round(v, 4) for k, v in sorted(r["metrics"].items())})) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
    return "\n".join(lines)
