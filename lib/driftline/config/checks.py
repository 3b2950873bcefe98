"""Checks across sections, run once when a use case is loaded (:meth:`UseCaseConfig.parse`).

Each failure is a :class:`ConfigError` naming the use case, the section and key,
and what to do; nothing is written before a use case passes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from driftline.config.durations import trigger_options
from driftline.config.sections import CLASSIFIER_NAMES, REGRESSOR_NAMES, DatasetLimits, window_seconds
from driftline.errors import ConfigError, ModelSpecError

if TYPE_CHECKING:
    from driftline.config.usecase import FieldSpec, UseCaseConfig

NUMERIC_TYPES = frozenset({"int", "long", "double"})


def check_usecase(uc: UseCaseConfig) -> None:
    """Run every check; raise on the first section that fails."""
    check_dataset_fields("events", uc.schema_, uc.event_id, uc.event_time, uc.validation.event_limits())
    check_features(uc)
    check_model(uc)
    check_drift(uc)
    check_streaming(uc)
    check_simulator(uc)
    check_across_stages(uc)


def check_across_stages(uc: UseCaseConfig) -> None:
    """What no single section can see: the label's names against the events', model features
    against what the feature definitions produce, drift features against the model's. Every
    problem is named at once (``driftline usecase check`` lists them one per line)."""
    from driftline.onboarding import drift_problems, label_problems, model_problems

    problems = [*label_problems(uc), *model_problems(uc), *drift_problems(uc)]
    if problems:
        raise ConfigError(f"usecase {uc.name}: " + f"; usecase {uc.name}: ".join(str(p) for p in problems))


def check_dataset_fields(
    name: str, fields: Sequence[FieldSpec], id_field: str, time_field: str, limits: DatasetLimits
) -> None:
    """A stream's fields against its id, time field, reserved names and limits."""
    from driftline.catalog import RESERVED_FIELD_NAMES

    names = [f.name for f in fields]
    if id_field not in names:
        raise ConfigError(f"{name}: id field {id_field!r} is not in the schema {names}")
    if time_field not in names:
        raise ConfigError(f"{name}: time field {time_field!r} is not in the schema {names}")
    clash = sorted(RESERVED_FIELD_NAMES.intersection(names))
    if clash:
        raise ConfigError(f"schema: field names {clash} are reserved for source coordinates; rename them")
    for i, f in enumerate(fields):
        if (f.min is not None or f.max is not None) and f.type not in NUMERIC_TYPES:
            raise ConfigError(f"schema[{i}] ({f.name}): min/max need a numeric type, got {f.type!r}")
        if f.max_length is not None and f.type != "string":
            raise ConfigError(f"schema[{i}] ({f.name}): max_length needs type string, got {f.type!r}")
    for key, lim in (("", limits), ("warn.", limits.warn)):
        unknown = sorted(set(lim.max_missing_rate) - set(names))
        if unknown:
            raise ConfigError(f"validation.{key}max_missing_rate: unknown fields {unknown}; expected some of {names}")


def check_features(uc: UseCaseConfig) -> None:
    """Feature definitions against the schema: fields exist, windows parse, names are unique.
    Raises one :class:`ConfigError` naming every problem (see :func:`feature_problems`)."""
    problems = feature_problems(uc)
    if problems:
        raise ConfigError("; ".join(problems))


def feature_problems(uc: UseCaseConfig) -> list[str]:
    """Every problem of the ``features:`` section against the schema, one message each,
    each naming the key (``usecase <uc>: features.<key>: ...``); empty when there is none."""
    defs = uc.features
    types = {f.name: f.type for f in uc.schema_}
    numeric_fields = {n for n, t in types.items() if t in NUMERIC_TYPES}
    entity = defs.entity or uc.entity_key
    label, label_time = uc.label.field, uc.validation.labels.time_field

    problems: list[str] = []

    def fail(key: str, message: str) -> None:
        problems.append(f"usecase {uc.name}: features.{key}: {message}")

    if entity not in types:
        fail("entity", f"{entity!r} is not a field; expected one of {sorted(types)}")
    if types.get(uc.event_time) != "timestamp":
        fail("timestamp", f"event_time {uc.event_time!r} must be a timestamp field")
    if entity == uc.event_id and defs.aggregates:
        fail("aggregates", f"the entity is the event itself ({entity!r} is the event_id), so every window would "
                           "hold only the event: remove the aggregates, or set features.entity to a field that "
                           "repeats across events (a customer, a device)")
    booleans = {n for n, t in types.items() if t == "boolean"}
    for key, names, allowed in (("numeric", defs.numeric, numeric_fields | booleans),
                                ("categorical", defs.categorical, set(types))):
        for i, name in enumerate(names):
            if name not in allowed:
                fail(f"{key}[{i}]", f"{name!r} is not a {key} field; expected one of {sorted(allowed)}")
    reserved = {uc.event_id, entity, uc.event_time, label, label_time}
    seen: set[str] = set()
    for name in defs.columns():
        if name in seen:
            fail("", f"feature name {name!r} is defined twice")
        seen.add(name)
    for name in [*defs.time_features(), *(a.name for a in defs.aggregates), *(r.name for r in defs.ratios)]:
        if name in types or name in reserved:
            fail("", f"feature name {name!r} clashes with a field of the event or label")
    numeric_features = set(defs.numeric) | set(defs.time_features())
    for i, agg in enumerate(defs.aggregates):
        agg_key = f"aggregates[{i}]"
        try:
            window_seconds(agg.window)
        except ValueError as e:
            fail(f"{agg_key}.window", str(e))
        if agg.fn != "count" and agg.column is None:
            fail(f"{agg_key}.column", f"fn {agg.fn!r} needs a column")
        if agg.source == "labels":
            if agg.column not in (None, label):
                fail(f"{agg_key}.column", f"a labels aggregate reads the label {label!r}, got {agg.column!r}")
        elif agg.column is not None:
            allowed = numeric_fields if agg.fn in {"sum", "mean", "std"} else set(types)
            if agg.column not in allowed:
                fail(f"{agg_key}.column", f"{agg.column!r} is not a suitable field for {agg.fn}; "
                                          f"expected one of {sorted(allowed)}")
        numeric_features.add(agg.name)
    for i, ratio in enumerate(defs.ratios):
        for side in ("numerator", "denominator"):
            ref = getattr(ratio, side)
            if ref not in numeric_fields and ref not in numeric_features:
                fail(f"ratios[{i}].{side}", f"{ref!r} is neither a numeric field nor an earlier numeric feature")
        numeric_features.add(ratio.name)
    return problems


def check_model(uc: UseCaseConfig) -> None:
    """The estimator must fit the label kind; class weights and threshold rules need a binary label."""
    if uc.model is None:
        return
    allowed = CLASSIFIER_NAMES if uc.label.kind == "binary" else REGRESSOR_NAMES
    if uc.model.estimator not in allowed:
        raise ModelSpecError(
            f"usecase {uc.name}: model.estimator: got {uc.model.estimator!r}, but label.kind is "
            f"{uc.label.kind!r}: expected one of {sorted(allowed)}"
        )
    if uc.label.kind != "binary":
        if uc.model.class_weight is not None:
            raise ModelSpecError(f"usecase {uc.name}: model.class_weight: got {uc.model.class_weight!r}, but "
                                 f"label.kind is {uc.label.kind!r}: class weights need a binary label; remove the key")
        if not isinstance(uc.model.threshold, float | int):
            raise ModelSpecError(f"usecase {uc.name}: model.threshold: a rule ({uc.model.threshold.rule}) needs a "
                                 f"binary label, but label.kind is {uc.label.kind!r}; remove the key")


# the metrics the monitor computes per window, by label kind (drift.performance.thresholds)
PERFORMANCE_METRICS = {"binary": ("roc_auc", "precision", "recall"), "regression": ("rmse", "mae")}


def check_drift(uc: UseCaseConfig) -> None:
    """Durations, threshold metric names and per-column limits of the ``drift:`` section."""
    try:
        for key in ("window_s", "lateness_s", "label_delay_s"):
            getattr(uc.drift, key)
    except ConfigError as e:
        raise ConfigError(f"usecase {uc.name}: {e}") from e
    metrics = PERFORMANCE_METRICS[uc.label.kind]
    unknown = sorted(set(uc.drift.performance.thresholds) - set(metrics))
    if unknown:
        raise ConfigError(f"usecase {uc.name}: drift.performance.thresholds: unknown metrics {unknown}; "
                          f"expected some of {list(metrics)} for a {uc.label.kind} label")
    names = [f.name for f in uc.schema_]
    unknown = sorted(set(uc.drift.quality.max_missing_rate) - set(names))
    if unknown:
        raise ConfigError(f"usecase {uc.name}: drift.quality.max_missing_rate: unknown fields {unknown}; "
                          f"expected some of {names}")


def check_streaming(uc: UseCaseConfig) -> None:
    """Durations and the trigger of the ``streaming:`` section."""
    try:
        uc.streaming.dedupe_window_s  # noqa: B018 - parsing is the check
        uc.streaming.stream_window_max_s  # noqa: B018
        uc.streaming.allowed_lateness_s  # noqa: B018
    except ConfigError as e:
        raise ConfigError(f"usecase {uc.name}: {e}") from e
    try:
        trigger_options(uc.streaming.trigger)
    except ConfigError as e:
        raise ConfigError(f"usecase {uc.name}: streaming.{e}") from e


def check_simulator(uc: UseCaseConfig) -> None:
    """The ``simulator:`` options against the named generator's option table."""
    if not uc.simulator:
        return
    from driftline.simulate import check_simulator_options

    check_simulator_options(uc)
