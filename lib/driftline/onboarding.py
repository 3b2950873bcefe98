"""Your own data, from configuration only: check a use case against every stage, or draft one from samples.

    driftline usecase check --usecase fraud                  every problem of a use case, before any data
    driftline usecase init --events sample.jsonl --labels labels.jsonl --name payments

Checking (:func:`check_usecase_file`) loads the YAML, runs the checks across sections one
by one (so one broken key does not hide the next), adds the checks no single section can
make (a model feature no feature definition produces, a numeric feature fed to the model as
a category, a drift feature the monitor cannot watch, a label that is also an event field),
then compiles each stage's Spark plans on empty frames with the use case's schema:
validation (bronze → silver), features (point in time, online, streaming windows), model
(training columns, estimator, search), drift (the three monitor counts) and scoring (the
streaming query up to the features it serves). Compiling analyses plans, it runs no job.
Each problem names the YAML key and what to do::

    report = check_usecase_file("fraud", platform=load_platform(), session=lambda: spark)
    report.ok, report.checks, [str(p) for p in report.problems]

Drafting (:func:`draft_usecase`) infers a use case from JSON-lines samples, without Spark:
field types, ``required``, ``allowed`` values, ``min``/``max``, the event id, event time,
entity and label, and suggests features, a model, drift and streaming settings, written as
commented YAML that loads with :func:`driftline.config.load_usecase`::

    draft = draft_usecase(read_jsonl("events.jsonl").records, read_jsonl("labels.jsonl").records, "payments")
    Path("conf/usecases/payments.yaml").write_text(draft.text)
    draft.inferred, draft.review      # what was guessed, what a person should look at
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import yaml
from pydantic import ValidationError

from driftline.config import PlatformConfig, UseCaseConfig, describe_errors
from driftline.config.checks import (
    NUMERIC_TYPES,
    check_dataset_fields,
    check_drift,
    check_model,
    check_simulator,
    check_streaming,
    feature_problems,
)
from driftline.config.sections import FeatureDefinitions
from driftline.config.usecase import read_usecase_yaml, usecase_path
from driftline.errors import DriftlineError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from driftline.features import FeatureSpec, StreamingWindow

R = TypeVar("R")

# =========================================================================== check

STAGES = ("load", "validation", "features", "model", "drift", "scoring", "simulator")
_PREFIX = re.compile(r"^usecase [^:]+: ")
_KEY = re.compile(r"^[A-Za-z_][\w.\[\]]*$")


@dataclass(frozen=True)
class Problem:
    """One problem of a use case: the stage that found it, the YAML key and what to do."""

    stage: str
    key: str
    message: str

    @classmethod
    def parse(cls, stage: str, text: str, default_key: str = "") -> Problem:
        """A problem from a ``[usecase <uc>: ]<key>: <message>`` error text (``default_key`` when it names none)."""
        text = _PREFIX.sub("", text.strip())
        key, sep, rest = text.partition(": ")
        return cls(stage, key, rest) if sep and _KEY.match(key) else cls(stage, default_key, text)

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_usecase_file` found: how many checks ran and every problem."""

    name: str
    source: str
    checks: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"usecase {self.name}: ok — {self.checks} checks"
        n = len(self.problems)
        return f"usecase {self.name} ({self.source}): {n} problem{'s' if n > 1 else ''} in {self.checks} checks"

    def lines(self) -> list[str]:
        """The summary, then one line per problem."""
        return [self.summary(), *(f"  {p}" for p in self.problems)]


class _Collector:
    """Runs checks one by one and keeps every problem they report."""

    def __init__(self) -> None:
        self.checks = 0
        self.problems: list[Problem] = []

    def failed(self, *stages: str) -> bool:
        return any(p.stage in stages for p in self.problems)

    def add(self, stage: str, problems: Iterable[Problem | str]) -> None:
        """One check whose problems are already known (messages or :class:`Problem` s)."""
        self.checks += 1
        self.problems.extend(p if isinstance(p, Problem) else Problem.parse(stage, p) for p in problems)

    def check(self, stage: str, fn: Callable[..., R], *args: Any) -> R | None:
        """One check that raises a :class:`DriftlineError` naming the key when it fails."""
        self.checks += 1
        try:
            return fn(*args)
        except DriftlineError as e:
            self.problems.extend(Problem.parse(stage, part, stage) for part in _split(str(e)))
            return None

    def compile(self, stage: str, what: str, fn: Callable[[], R]) -> R | None:
        """One plan compiled on empty frames: a configuration error, or any error Spark raises
        while analysing the plan, is a problem of ``stage``."""
        self.checks += 1
        try:
            return fn()
        except DriftlineError as e:
            self.problems.extend(Problem.parse(stage, part, stage) for part in _split(str(e)))
        except Exception as e:  # whatever stops the plan (an AnalysisException, mostly) is what to show
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self.problems.append(Problem(stage, stage, (
                f"the {what} does not compile although the section passes its checks: {type(e).__name__}: "
                f"{first[:400]}; change the keys it names (or report the combination as a driftline bug)")))
        return None


def _split(text: str) -> list[str]:
    """The separate messages of an error that joined several with '; usecase <uc>: '."""
    parts = re.split(r"; (?=usecase [^:]+: )", text)
    return [p for p in parts if p]


def check_usecase_file(
    name_or_path: str | Path,
    *,
    platform: PlatformConfig,
    session: Callable[[], SparkSession],
    conf_dir: str | Path | None = None,
) -> CheckReport:
    """Check a use case (a name under ``conf/usecases`` or a YAML path) against every stage.

    A YAML that cannot be read raises :class:`~driftline.errors.ConfigError`; a section
    that does not validate is reported key by key (then nothing is compiled). ``session``
    is called once, only when the sections are valid, to compile the plans.

    Example::

        report = check_usecase_file("conf/usecases/fraud.yaml", platform=load_platform(),
                                    session=lambda: build_session(platform, "check"))
        print("\\n".join(report.lines()))
    """
    path = usecase_path(name_or_path, conf_dir)
    data = read_usecase_yaml(path)
    try:
        uc = UseCaseConfig.model_validate(data)
    except ValidationError as e:
        name = str(data.get("name") or path.stem)
        return CheckReport(name, str(path), 1, tuple(Problem.parse("load", line) for line in describe_errors(e)))
    return check_stages(uc, platform=platform, session=session, source=str(path))


def check_stages(
    uc: UseCaseConfig, *, platform: PlatformConfig, session: Callable[[], SparkSession], source: str = ""
) -> CheckReport:
    """Every check of a validated use case: across sections, then each stage compiled on
    empty frames. A stage whose own checks failed is not compiled (its errors would repeat them).

    Example::

        check_stages(uc.replace(drift={"features": ["amount"]}), platform=platform, session=lambda: spark).ok
    """
    c = _Collector()
    c.check("validation", check_dataset_fields, "events", uc.schema_, uc.event_id, uc.event_time,
            uc.validation.event_limits())
    c.add("validation", label_problems(uc))
    c.add("features", feature_problems(uc))
    c.check("model", check_model, uc)
    c.add("model", model_problems(uc))
    c.check("drift", check_drift, uc)
    c.add("drift", drift_problems(uc))
    c.check("scoring", check_streaming, uc)
    if uc.simulator:
        c.check("simulator", check_simulator, uc)
    # every plan starts from valid silver frames, but the estimator: no Spark when none can compile
    if not c.failed("validation") or (uc.model is not None and not c.failed("model")):
        _compile_stages(session(), platform, uc, c)
    return CheckReport(uc.name, source or f"usecase {uc.name}", c.checks, tuple(c.problems))


# --------------------------------------------------------------------------- checks no single section can make


def feature_kinds(defs: FeatureDefinitions) -> dict[str, tuple[str, str]]:
    """Every feature the definitions produce: name -> (``numeric`` | ``categorical``, where it is defined).

        >>> feature_kinds(FeatureDefinitions(numeric=["amount"], categorical=["country"]))["country"]
        ('categorical', 'features.categorical')
    """
    kinds: dict[str, tuple[str, str]] = {}
    kinds.update({n: ("numeric", "features.numeric") for n in defs.numeric})
    kinds.update({n: ("categorical", "features.categorical") for n in defs.categorical})
    kinds.update({n: ("numeric", "features.time_of_day") for n in defs.time_features()})
    kinds.update({a.name: ("numeric", "features.aggregates") for a in defs.aggregates})
    kinds.update({r.name: ("numeric", "features.ratios") for r in defs.ratios})
    return kinds


def label_problems(uc: UseCaseConfig) -> list[Problem]:
    """The label stream's names against the events': the label and its time field must be names of their own."""
    fields = {f.name for f in uc.schema_}
    label, time_field = uc.label.field, uc.validation.labels.time_field
    out = []
    if label in fields:
        out.append(Problem("validation", "label.field", (
            f"{label!r} is also an event field (schema): the label must arrive only on {uc.topic('labels')}, "
            "or it leaks into the features and collides with the event field in the training set; "
            "rename the label field or remove the event field")))
    if time_field == label:
        out.append(Problem("validation", "validation.labels.time_field", (
            f"{time_field!r} is the label field too: name the time the label became known differently, "
            "e.g. label_time")))
    elif time_field in fields:
        out.append(Problem("validation", "validation.labels.time_field", (
            f"{time_field!r} is also an event field: the training set holds the event's and the label's "
            "columns side by side; give the label's time a name of its own, e.g. label_time")))
    return out


def model_problems(uc: UseCaseConfig) -> list[Problem]:
    """``model.numeric`` / ``model.categorical`` against what the feature definitions produce."""
    if uc.model is None:
        return []
    kinds = feature_kinds(uc.features)
    types = {f.name: f.type for f in uc.schema_}
    out = []
    for key, names in (("numeric", uc.model.numeric), ("categorical", uc.model.categorical)):
        for i, name in enumerate(names):
            where = f"model.{key}[{i}]"
            if name == uc.label.field:
                out.append(Problem("model", where, f"{name!r} is the label (label.field): a model cannot read "
                                                   "its own label; remove it"))
            elif name not in kinds:
                if name in types:
                    home = "features.numeric" if types[name] in NUMERIC_TYPES else "features.categorical"
                    hint = f"it is an event field: add it to {home}"
                else:
                    close = difflib.get_close_matches(name, [*kinds, *types], n=3)
                    hint = ("define it under features (numeric, categorical, aggregates, ratios, time_of_day) "
                            "or remove it" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""))
                out.append(Problem("model", where, f"{name!r} is not produced by any feature definition; {hint}"))
            elif key == "numeric" and kinds[name][0] == "categorical":
                out.append(Problem("model", where, (
                    f"{name!r} is a categorical feature (features.categorical): it reaches the model as text, "
                    "which is not a number; move it to model.categorical, or list the field under "
                    "features.numeric if it is a number")))
            elif key == "categorical" and kinds[name][0] == "numeric":
                out.append(Problem("model", where, (
                    f"{name!r} is a numeric feature ({kinds[name][1]}): one-hot encoding would make every "
                    "distinct value a category of its own; move it to model.numeric, or list the field under "
                    "features.categorical if its numbers are codes")))
    return out


def drift_problems(uc: UseCaseConfig) -> list[Problem]:
    """``drift.features``: the monitor compares event fields the model reads with their reference profile."""
    if uc.drift.features is None:
        return []
    fields = [f.name for f in uc.schema_]
    model_features = set(uc.model.features) if uc.model is not None else set()
    out = []
    for i, name in enumerate(uc.drift.features):
        where = f"drift.features[{i}]"
        if name not in fields:
            derived = " (it is a derived feature)" if name in feature_kinds(uc.features) else ""
            out.append(Problem("drift", where, (
                f"{name!r} is not an event field{derived}: the monitor compares event fields with the "
                f"training profile; expected some of {fields}, or null for every profiled field")))
        elif uc.model is not None and name not in model_features:
            out.append(Problem("drift", where, (
                f"{name!r} is not a model feature (model.numeric/model.categorical), so the training profile "
                "has no distribution to compare it with and it would never be watched; add it to the model "
                "or remove it")))
    return out


# --------------------------------------------------------------------------- stages compiled on empty frames


def _profile_stub(uc: UseCaseConfig) -> dict[str, Any]:
    """A reference profile shaped like the one training logs, for compiling the monitor's plans."""
    numeric = uc.model.numeric if uc.model is not None else []
    categorical = uc.model.categorical if uc.model is not None else []
    return {
        "numeric": {c: {"edges": [0.0, 1.0]} for c in numeric},
        "categorical": {c: {"counts": {"a": 1}} for c in categorical},
        "prediction": {"edges": [0.25, 0.5, 0.75]},
    }


def _compile_stages(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, c: _Collector) -> None:
    from driftline import monitoring, training
    from driftline.catalog import BRONZE_SCHEMA, PREDICTION_SCHEMA
    from driftline.features import (
        feature_spec,
        online_columns,
        online_features,
        point_in_time_features,
        streaming_plan,
        training_set,
    )
    from driftline.quality import classify, event_dataset, good_records, label_dataset
    from driftline.scoring import finish_features, scoring_stream, split_aggregates

    bronze = spark.createDataFrame([], BRONZE_SCHEMA)

    # validation: bronze -> silver, for events and labels
    silver: tuple[DataFrame, DataFrame] | None = None
    if not c.failed("validation"):
        def validation() -> tuple[DataFrame, DataFrame]:
            events, labels = event_dataset(uc), label_dataset(uc)
            return (_analysed(good_records(classify(bronze, events), events)),
                    _analysed(good_records(classify(bronze, labels), labels)))

        silver = c.compile("validation", "validation plan (bronze to silver)", validation)

    # features: point in time (training set), online table, streaming windows
    offline = online = None
    spec = feature_spec(uc)
    if silver is not None and not c.failed("features"):
        events, labels = silver
        offline = c.compile("features", "point-in-time training set plan",
                            lambda: _analysed(training_set(point_in_time_features(events, spec, labels), labels, spec)))
        if online_columns(spec):
            as_of = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
            online = c.compile("features", "online table plan",
                               lambda: _analysed(online_features(events, spec, as_of, labels)))
        # the windows the stream computes itself; longer ones are read from the online table (and a
        # 7d window sliding every minute takes Spark half a minute just to analyse)
        window_max = 0 if c.failed("scoring") else uc.streaming.stream_window_max_s
        for w in streaming_plan(spec):
            if w.window_s <= window_max:
                c.compile("features", f"streaming window plan ({w.duration})",
                          functools.partial(_window_plan, events, spec, w))

    # model: the training columns, the estimator with its parameters, the search
    if uc.model is not None and not c.failed("model"):
        model = uc.model
        kind, label = uc.label.kind, uc.label.field

        def estimator() -> None:
            est = training.make_estimator(model, label, model.split.seed)
            training.param_maps(est, training.candidate_params(model.search, model.split.seed))
            training.search_evaluator(model.search.metric or training.DEFAULT_METRIC[kind], kind, label)

        c.compile("model", "estimator and its search", estimator)
        if offline is not None:
            table = offline

            def columns() -> None:
                training.check_columns(table, uc, model)
                _analysed(training.prepare(table, uc, model))

            c.compile("model", "training columns", columns)

    # drift: the monitor's three count plans against a profile shaped like the model's
    if silver is not None and not c.failed("drift"):
        profile, drift = _profile_stub(uc), uc.drift
        predictions = spark.createDataFrame([], PREDICTION_SCHEMA)
        events_ds = event_dataset(uc)
        c.compile("drift", "monitor plan of events", lambda: _analysed(monitoring.event_counts(
            monitoring.classified_events(classify(bronze, events_ds), uc), profile, drift, uc)))
        c.compile("drift", "monitor plan of predictions",
                  lambda: _analysed(monitoring.prediction_counts(predictions, profile, drift, uc)))
        c.compile("drift", "monitor plan of performance", lambda: _analysed(monitoring.performance_counts(
            monitoring.join_labels(predictions, monitoring.parse_labels(bronze, uc), drift), drift, uc)))

    # scoring: the streaming query up to the features it serves the model
    if offline is not None and not c.failed("scoring", "model"):
        _, table_names = split_aggregates(spec, uc.streaming.stream_window_max_s)
        online_table = online

        def scoring() -> None:
            stream = scoring_stream(spark, platform, uc)
            batch = spark.createDataFrame([], stream.schema)
            lookup = None
            if table_names and online_table is not None:
                lookup = online_table.select(spec.entity, *table_names)
            served = finish_features(batch, lookup, spec, table_names)
            needed = [uc.event_id, uc.entity_key, uc.event_time, *(uc.model.features if uc.model else [])]
            _analysed(served.select(*dict.fromkeys(needed)))

        c.compile("scoring", "scoring query plan", scoring)


def _window_plan(events: DataFrame, spec: FeatureSpec, window: StreamingWindow) -> DataFrame:
    from driftline.features import streaming_window_features

    return _analysed(streaming_window_features(events, spec, window, watermark=None))


def _analysed(df: DataFrame) -> DataFrame:
    """``df`` after Spark has resolved its plan (its schema): analysis errors surface here, no job runs."""
    df.schema  # noqa: B018 - analysing the plan is the check
    return df


# =========================================================================== init

ID_NAME = re.compile(r"(?:^|[^a-z])id$|uuid$|(?:^|_)key$", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z0-9]Id$")
# what Spark's JSON reader takes as a timestamp: ISO 8601 with seconds and a zone
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})$")
_NAIVE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
BINARY_VALUES = frozenset({"0", "1", "true", "false"})

MOSTLY = 0.99           # share of the non-null values a type must cover, and of records for `required`
MAX_ALLOWED = 30        # at most this many distinct strings get an `allowed:` list ...
MIN_REPEATS = 2.0       # ... when each is seen at least this often on average
QUANTILES = (0.001, 0.999)
DRIFT_WINDOWS = ((60, "1m"), (300, "5m"), (900, "15m"), (3600, "1h"))
MIN_DRIFT_SAMPLES = 500
MAX_MEAN_FEATURES = 3   # numeric fields that get a 24h mean per entity and a ratio to it


def is_id_like(name: str) -> bool:
    """Whether a field name reads like an identifier: ``id``, ``order_id``, ``customerId``, ``uuid``, ``*_key``.

        >>> [is_id_like(n) for n in ("event_id", "customerId", "paid", "amount")]
        [True, True, False, False]
    """
    return bool(ID_NAME.search(name) or _CAMEL_ID.search(name))


def _value_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "long" if -(2**63) <= v < 2**63 else "double"
    if isinstance(v, float):
        return "double" if math.isfinite(v) else "other"
    if isinstance(v, str):
        return "timestamp" if ISO_TIME.match(v) else "string"
    return "other"


@dataclass(frozen=True)
class FieldProfile:
    """What a sample says about one JSON field."""

    name: str
    type: str                      # string | long | double | boolean | timestamp | other
    records: int                   # records in the sample
    present: int                   # records with a non-null value
    distinct: int
    off_type: int                  # non-null values that are not of ``type``
    values: tuple[Any, ...] = field(repr=False)   # the non-null values of ``type``
    naive_times: int = 0           # strings that look like a time, but not one with seconds and a zone

    @property
    def required(self) -> bool:
        return self.present >= MOSTLY * self.records

    @property
    def missing_share(self) -> float:
        return 1.0 - self.present / self.records if self.records else 1.0

    @property
    def unique(self) -> bool:
        """(Nearly) every value different: an identifier of the record."""
        return self.present > 0 and self.distinct >= MOSTLY * self.present

    @property
    def repeats(self) -> bool:
        """Values come back: fewer distinct values than 90% of the present ones, and more than one."""
        return 1 < self.distinct <= 0.9 * self.present

    @property
    def id_like(self) -> bool:
        return is_id_like(self.name)

    def allowed(self) -> list[str] | None:
        """The seen values, for a string field with few, repeated values (never for identifiers)."""
        if self.type != "string" or self.id_like or self.distinct > MAX_ALLOWED:
            return None
        if self.distinct == 0 or self.present < MIN_REPEATS * self.distinct:
            return None
        return sorted({str(v) for v in self.values})

    def bounds(self) -> tuple[float, float] | None:
        """``min``/``max`` for a number: the 0.1% / 99.9% quantiles widened by their distance on each
        side (never below 0 for a field with no negative value), rounded outwards."""
        if self.type not in NUMERIC_TYPES or self.id_like or not self.values:
            return None
        x = np.asarray(self.values, dtype=np.float64)
        lo, hi = (float(q) for q in np.quantile(x, QUANTILES))
        span = max(hi - lo, abs(hi), abs(lo), 1.0)
        low = 0.0 if lo >= 0 else _round_out(lo - span, up=False)
        high = _round_out(hi + span, up=True)
        if self.type == "long":
            return float(math.floor(low)), float(math.ceil(high))
        return low, high


def _round_out(x: float, *, up: bool) -> float:
    """``x`` rounded away from the data to two significant digits (4137.2 -> 4200.0 upwards)."""
    if x == 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(abs(x))) - 1)
    return float((math.ceil(x / step) if up else math.floor(x / step)) * step)


def profile_fields(records: Sequence[Mapping[str, Any]]) -> list[FieldProfile]:
    """One :class:`FieldProfile` per field seen in ``records``, in order of first appearance.

    A field's type is the one that covers at least 99% of its non-null values (integers and
    decimals together make ``double``); ISO 8601 strings with a zone are ``timestamp``.

    Example::

        profile_fields([{"id": "a", "n": 1}, {"id": "b", "n": 2.5}])[1].type   # 'double'
    """
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    out = []
    for name in names:
        values = [r[name] for r in records if r.get(name) is not None]
        kinds = Counter(_value_kind(v) for v in values)
        n = len(values)
        numbers = kinds["long"] + kinds["double"]
        if n and kinds["boolean"] >= MOSTLY * n:
            kind = "boolean"
        elif n and numbers >= MOSTLY * n:
            kind = "long" if kinds["double"] == 0 else "double"
        elif n and kinds["timestamp"] >= MOSTLY * n:
            kind = "timestamp"
        elif n and kinds["string"] + kinds["timestamp"] >= MOSTLY * n:
            kind = "string"
        else:
            kind = "other"
        accepted = {"long": ("long",), "double": ("long", "double"), "string": ("string", "timestamp")}.get(
            kind, (kind,))
        typed = [v for v in values if _value_kind(v) in accepted]
        hashable = [json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in values]
        naive = sum(1 for v in values if isinstance(v, str) and _NAIVE_TIME.match(v) and not ISO_TIME.match(v))
        out.append(FieldProfile(name, kind, len(records), n, len(set(hashable)), n - len(typed), tuple(typed), naive))
    return out


@dataclass(frozen=True)
class JsonLines:
    """The records of a JSON-lines sample and how many lines were not JSON objects."""

    records: list[dict[str, Any]]
    skipped: int = 0


def read_jsonl(path: str | Path, limit: int = 100_000) -> JsonLines:
    """The first ``limit`` JSON objects of a JSON-lines file (blank lines ignored, other lines counted).

    Example::

        read_jsonl("events.jsonl").records[0]   # {'event_id': 'e1', ...}
    """
    if limit < 1:
        raise UsageError(f"limit: expected a positive number of records, got {limit}")
    records: list[dict[str, Any]] = []
    skipped = 0
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                records.append(value)
                if len(records) >= limit:
                    break
            else:
                skipped += 1
    return JsonLines(records, skipped)


@dataclass(frozen=True)
class Draft:
    """A drafted use case: the mapping, its commented YAML, what was inferred and what to review."""

    name: str
    data: dict[str, Any]
    text: str
    inferred: list[str]
    review: list[str]


def _pick_event_id(fields: Sequence[FieldProfile]) -> FieldProfile:
    candidates = [f for f in fields if f.type in ("string", "long") and f.required and f.unique]
    named = [f for f in candidates if f.id_like]
    if not candidates:
        raise UsageError("events: no field has a different value in (nearly) every record, so there is no event "
                         "id; add one (e.g. a UUID string named event_id) to the events")
    preferred = [f for f in named if f.name.lower() in ("id", "event_id", "eventid")]
    return (preferred or named or candidates)[0]


def _pick_event_time(fields: Sequence[FieldProfile]) -> FieldProfile:
    times = [f for f in fields if f.type == "timestamp"]
    if not times:
        naive = [f.name for f in fields if f.naive_times]
        hint = f" ({naive} look like times, but without seconds or a zone)" if naive else ""
        raise UsageError("events: no field holds ISO 8601 times with a zone (e.g. 2024-05-01T12:00:00Z)"
                         f"{hint}; the event time must be one")
    named = [f for f in times if "event" in f.name.lower()]
    required = [f for f in times if f.required]
    return (named or required or times)[0]


def _pick_entity(fields: Sequence[FieldProfile], event_id: str) -> FieldProfile | None:
    repeated = [f for f in fields if f.name != event_id and f.id_like and f.type in ("string", "long")
                and f.required and f.repeats]
    # the finest repeated identifier (most values): the customer rather than the merchant
    return max(repeated, key=lambda f: f.distinct) if repeated else None


def _feature_name(wanted: str, taken: set[str]) -> str:
    name = wanted
    while name in taken:
        name = f"{name}_feature"
    taken.add(name)
    return name


def _seconds_between(later: Any, earlier: Any) -> float | None:
    try:
        a = dt.datetime.fromisoformat(str(later))
        b = dt.datetime.fromisoformat(str(earlier))
        return (a - b).total_seconds()
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    """A compact duration rounded up to whole minutes, hours past one, days past two:
    300 -> '5m', 3600 -> '1h', 200000 -> '3d'."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes}m"
    hours = math.ceil(minutes / 60)
    return f"{hours}h" if hours <= 48 else f"{math.ceil(hours / 24)}d"


def _label_kind(values: Sequence[Any]) -> str:
    texts = {str(v).strip().lower() for v in values}
    texts = {"1" if t == "1.0" else "0" if t == "0.0" else t for t in texts}
    if texts and texts <= BINARY_VALUES:
        return "binary"
    if all(_value_kind(v) in ("long", "double") for v in values):
        return "regression"
    shown = sorted(texts)[:5]
    raise UsageError(f"labels: label values {shown} are neither 0/1 or true/false (a binary label) nor numbers "
                     "(a regression label)")


@dataclass
class _Notes:
    """What drafting inferred and what a person should review, in the order found."""

    inferred: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Label:
    field: str
    kind: str
    time_field: str
    delay_s: float
    delays: tuple[float, ...]       # seconds from event to label, of the labels matched to an event


def _draft_label(labels: Sequence[Mapping[str, Any]] | None, events: Sequence[Mapping[str, Any]],
                 ev_id: str, ev_time: str, event_fields: set[str], notes: _Notes) -> _Label:
    """The label field, its kind and time field, and the delays seen, from the labels sample."""
    if not labels:
        notes.review.append("label: no --labels sample, so label.field is a placeholder ('label', binary): set "
                            "the field and kind (binary or regression) your labels carry")
        return _Label("label", "binary", "label_time", 300.0, ())
    profiles = profile_fields(labels)
    if ev_id not in {f.name for f in profiles}:
        notes.review.append(f"labels: no field {ev_id!r}: each label must carry the event id under the same name "
                            "as the events")
    times = [f for f in profiles if f.type == "timestamp" and f.name != ev_id]
    values = [f for f in profiles if f.name != ev_id and f.type != "timestamp"]
    if not values:
        raise UsageError(f"labels: no label field besides {ev_id!r} and times")
    chosen = next((f for f in values if f.type in ("boolean", "long", "double")), values[0])
    kind = _label_kind(chosen.values)
    if len(values) > 1:
        notes.review.append(f"label.field: {chosen.name} was taken as the label; the labels also carry "
                            f"{[f.name for f in values if f is not chosen]}, which driftline ignores")
    time_field = times[0].name if times else "label_time"
    if not times:
        notes.review.append("validation.labels.time_field: the labels carry no ISO 8601 time with a zone; each "
                            "label needs the time it became known (label_time)")
    event_times = {r.get(ev_id): r.get(ev_time) for r in events if isinstance(r.get(ev_id), str | int)}
    delays = []
    for r in labels:
        key = r.get(ev_id)
        if isinstance(key, str | int) and key in event_times and r.get(time_field) is not None:
            s = _seconds_between(r.get(time_field), event_times[key])
            if s is not None and s >= 0:
                delays.append(s)
    delay_s = float(np.median(delays)) if delays else 300.0
    seen = "0/1 or true/false" if kind == "binary" else "numbers"
    notes.inferred.append(f"label: {chosen.name}, {kind} ({seen}); known at {time_field}, median delay "
                          f"{_duration(delay_s)} over {len(delays)} matched labels")
    if chosen.name in event_fields:
        notes.review.append(f"label.field: {chosen.name!r} is also an event field: the events must not carry the "
                            "label; `driftline usecase check` reports it until one of them is renamed")
    return _Label(chosen.name, kind, time_field, delay_s, tuple(delays))


def _draft_schema(ordered: Sequence[FieldProfile], fields: Sequence[FieldProfile], keys: tuple[str, str],
                  notes: _Notes) -> list[dict[str, Any]]:
    """One ``schema:`` entry per field in ``ordered``; ``keys`` (event id, event time) are always required."""
    schema: list[dict[str, Any]] = []
    for f in ordered:
        entry: dict[str, Any] = {"name": f.name, "type": f.type}
        if f.required or f.name in keys:
            entry["required"] = True
        bounds = f.bounds()
        if bounds is not None:
            entry["min"], entry["max"] = (int(b) if f.type == "long" else b for b in bounds)
        allowed = f.allowed()
        if allowed is not None:
            entry["allowed"] = allowed
        schema.append(entry)
        if f.off_type:
            notes.review.append(f"schema: {f.off_type} of {f.present} values of {f.name} are not {f.type}; those "
                                "records will be quarantined as wrong_type")
    for f in fields:
        if f.type == "other":
            notes.review.append(f"schema: {f.name} was left out: its values are neither all numbers, booleans nor "
                                "strings (nested objects and mixed types are not supported)")
        elif f.naive_times and f.type == "string":
            notes.review.append(f"schema: {f.name} looks like a time without seconds or a zone, so it is a string; "
                                "declare it `type: timestamp` if the times have seconds and are UTC")
    if any("allowed" in e for e in schema):
        notes.review.append("schema: the allowed lists hold only the values the sample shows; a new value is "
                            "quarantined as not_allowed (and a new category shows up in drift): add the ones you "
                            "expect")
    if any("max" in e for e in schema):
        notes.review.append("schema: min/max are the sample's 0.1% and 99.9% quantiles, widened; a value outside "
                            "is quarantined as out_of_range: set the real limits of each field")
    return schema


def _draft_features(ordered: Sequence[FieldProfile], entity: str, repeats: bool, taken: set[str],
                    notes: _Notes) -> dict[str, Any]:
    """Numeric and few-valued fields as they are, time of day, and (when the entity repeats)
    counts per entity, 24h means of the first numeric fields and each value's ratio to its mean."""
    numeric = [f.name for f in ordered if f.type in NUMERIC_TYPES and not f.id_like and f.name != entity]
    categorical = [f.name for f in ordered if f.name != entity and (
        f.type == "boolean" or (f.type == "string" and f.allowed() is not None))]
    many = [f.name for f in ordered if f.type == "string" and f.allowed() is None and not f.id_like]
    if many:
        notes.review.append(f"features: {many} have many distinct values and are not features; aggregate them "
                            "(e.g. distinct_count per entity) if they matter")
    aggregates: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    if repeats:
        for window in ("1h", "24h"):
            aggregates.append({"name": _feature_name(f"events_{window}", taken), "fn": "count", "window": window})
        for col in numeric[:MAX_MEAN_FEATURES]:
            mean = _feature_name(f"{col}_mean_24h", taken)
            aggregates.append({"name": mean, "fn": "mean", "column": col, "window": "24h"})
            ratios.append({"name": _feature_name(f"{col}_to_mean_24h", taken), "numerator": col, "denominator": mean})
    return {
        "entity": entity,
        **({"aggregates": aggregates} if aggregates else {}),
        **({"ratios": ratios} if ratios else {}),
        "time_of_day": {"hour": _feature_name("hour_of_day", taken), "is_night": _feature_name("is_night", taken),
                        "night_start": 22, "night_end": 6},
        "numeric": numeric,
        "categorical": categorical,
    }


def _draft_model(features: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A fast baseline over every drafted feature: a linear model with a small regularisation grid."""
    binary = kind == "binary"
    metric = "roc_auc" if binary else "rmse"
    tod = features["time_of_day"]
    return {
        "numeric": [*features["numeric"], tod["hour"], tod["is_night"],
                    *(a["name"] for a in features.get("aggregates", [])), *(r["name"] for r in features.get("ratios", []))],
        "categorical": list(features["categorical"]),
        "estimator": "logistic_regression" if binary else "linear_regression",
        "estimator_params": {"maxIter": 50},
        "impute": "median",
        "scale": True,
        **({"threshold": 0.5} if binary else {}),
        "split": {"method": "time", "fractions": [0.7, 0.15, 0.15], "seed": 42},
        "search": {"method": "grid", "params": {"regParam": [0.0, 0.01, 0.1]},
                   "validation": "train_validation_split", "parallelism": 1, "metric": metric},
        "gate": {"metric": metric},
        "profile": {"bins": 10, "rel_error": 0.001},
    }


def _draft_drift(n_events: int, times: Sequence[Any], delays: Sequence[float], notes: _Notes) -> dict[str, Any]:
    """A window that holds about ``MIN_DRIFT_SAMPLES`` events at the sample's rate (or fewer
    samples in an hour), and a label join horizon of twice the 99th percentile delay (at least 1h)."""
    span = _time_span(times)
    rate = n_events / span if span > 0 else 0.0
    window_s, window = next(((s, w) for s, w in DRIFT_WINDOWS if rate * s >= MIN_DRIFT_SAMPLES), DRIFT_WINDOWS[-1])
    min_samples = MIN_DRIFT_SAMPLES if rate * window_s >= MIN_DRIFT_SAMPLES else max(20, int(rate * window_s / 2))
    if rate:
        notes.inferred.append(f"rate: about {rate * 60:.1f} events a minute in the sample: drift window {window}, "
                              f"min_samples {min_samples}")
    p99 = float(np.quantile(delays, 0.99)) if delays else 1800.0
    return {
        "window": window,
        "lateness": _duration(2 * window_s),
        "min_samples": min_samples,
        "alpha": 0.01,
        "features": None,
        "performance": {"max_label_delay": _duration(max(3600.0, 2 * p99))},
        "alert": {"n": 2, "m": 3, "retrain": True},
    }


STREAMING_DEFAULTS: dict[str, Any] = {
    "trigger": "5 seconds", "dedupe_window": "10 minutes", "max_offsets_per_trigger": 100000,
    "starting_offsets": "earliest", "stream_window_max": "1h", "allowed_lateness": "10 minutes",
    "state_buckets": 64, "publish": True,
}


def draft_usecase(
    events: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]] | None,
    name: str,
    *,
    sources: tuple[str, str | None] = ("the events sample", None),
) -> Draft:
    """Draft a use case from a sample of event records and (optionally) label records.

    Raises :class:`UsageError` when the sample has no event id, no event time, or a label
    that is neither binary nor a number. ``sources`` names the samples in the YAML's header.

    Example::

        draft = draft_usecase(events, labels, "payments")
        Path("conf/usecases/payments.yaml").write_text(draft.text)   # loads with load_usecase("payments")
    """
    if not _NAME.match(name):
        raise UsageError(f"name: expected letters, digits and _ starting with a letter, got {name!r}")
    if not events:
        raise UsageError("events: the sample holds no JSON object records")
    fields = profile_fields(events)
    notes = _Notes()
    ev_id, ev_time = _pick_event_id(fields), _pick_event_time(fields)
    entity = _pick_entity(fields, ev_id.name)
    notes.inferred.append(f"event_id: {ev_id.name} ({ev_id.type}, different in {ev_id.distinct} of "
                          f"{ev_id.present} records)")
    notes.inferred.append(f"event_time: {ev_time.name} (ISO 8601 times with a zone)")
    if entity is None:
        notes.inferred.append(f"entity_key: {ev_id.name}, the event itself: no identifier repeats across events")
        notes.review.append("entity_key: no field repeats, so the entity is the event id and no windowed "
                            "aggregates were drafted; if events belong to a customer, device or account, add that "
                            "field and set entity_key to it")
    else:
        notes.inferred.append(f"entity_key: {entity.name} ({entity.distinct} values over {entity.present} events)")
    entity_name = entity.name if entity is not None else ev_id.name

    label = _draft_label(labels, events, ev_id.name, ev_time.name, {f.name for f in fields}, notes)
    keys = (ev_id.name, ev_time.name)
    ordered = [ev_id, *([entity] if entity is not None else []),
               *(f for f in fields if f.name not in (*keys, entity_name) and f.type != "other"), ev_time]
    schema = _draft_schema(ordered, fields, keys, notes)
    taken = {f.name for f in fields} | {label.field, label.time_field}
    features = _draft_features(ordered, entity_name, entity is not None, taken, notes)
    optional = {f.name: f.missing_share for f in ordered if not f.required and f.name not in keys}
    max_missing = {n: min(1.0, round(2 * share + 0.05, 2)) for n, share in optional.items()}
    data: dict[str, Any] = {
        "name": name,
        "entity_key": entity_name,
        "event_id": ev_id.name,
        "event_time": ev_time.name,
        "schema": schema,
        "label": {"field": label.field, "kind": label.kind, "delay_s": round(label.delay_s, 3)},
        "validation": {
            "max_quarantine_rate": 0.2,
            "max_duplicate_rate": 0.1,
            **({"max_missing_rate": max_missing} if max_missing else {}),
            "warn": {"max_quarantine_rate": 0.05},
            "labels": {"time_field": label.time_field, "max_quarantine_rate": 0.2, "max_duplicate_rate": 0.1},
        },
        "features": features,
        "model": _draft_model(features, label.kind),
        "drift": _draft_drift(len(events), ev_time.values, label.delays, notes),
        "streaming": dict(STREAMING_DEFAULTS),
        "routing": {"mode": "shadow", "share": 0.05},
    }
    header = (f"# {name}: drafted by `driftline usecase init` from {sources[0]} ({len(events)} events)"
              + (f" and {sources[1]} ({len(labels or [])} labels)" if sources[1] else "") + ".")
    text = render_usecase(data, header=header, counts={f.name: f for f in fields})
    return Draft(name, data, text, notes.inferred, notes.review)


def _time_span(values: Sequence[Any]) -> float:
    times = []
    for v in values:
        try:
            times.append(dt.datetime.fromisoformat(str(v)).timestamp())
        except ValueError:
            continue
    return max(times) - min(times) if len(times) > 1 else 0.0


# --------------------------------------------------------------------------- YAML with comments


def _flow(value: Any) -> str:
    """One value in YAML flow style, quoted wherever YAML needs it (spaces, ':', 'yes', '#', ...)."""
    text = yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True)
    return text.strip()[1:-1]


def _line(text: str, comment: str | None = None) -> str:
    return f"{text:<36} # {comment}" if comment else text


def render_usecase(data: Mapping[str, Any], *, header: str, counts: Mapping[str, FieldProfile]) -> str:
    """The drafted use case as YAML, with a comment on each section (like ``conf/usecases/fraud.yaml``).

    Example::

        yaml.safe_load(render_usecase(draft.data, header="# x", counts={})) == draft.data   # True
    """
    d = data
    out = [header,
           "# Review it (every REVIEW below), then: driftline usecase check --usecase <this file>",
           f"name: {_flow(d['name'])}"]
    entity = counts.get(d["entity_key"])
    out.append(_line(f"entity_key: {_flow(d['entity_key'])}",
                     f"REVIEW: repeats across events ({entity.distinct} values in the sample)"
                     if entity is not None and d["entity_key"] != d["event_id"]
                     else "REVIEW: no field repeats, so the entity is the event itself"))
    out.append(_line(f"event_id: {_flow(d['event_id'])}", "unique in every record"))
    out.append(_line(f"event_time: {_flow(d['event_time'])}", "ISO 8601 times with a zone"))
    out += ["# Event schema, one entry per JSON field: `required` when (nearly) every record has it,",
            "# `allowed` for few, repeated strings, `min`/`max` from the 0.1%/99.9% quantiles widened. REVIEW.",
            "schema:"]
    out += [f"  - {_flow(entry)}" for entry in d["schema"]]
    label = d["label"]
    out += ["label:",
            _line(f"  field: {_flow(label['field'])}", "REVIEW: the field the labels carry"),
            _line(f"  kind: {_flow(label['kind'])}", "binary (0/1, true/false) | regression (a number)"),
            _line(f"  delay_s: {_flow(label['delay_s'])}", "median seconds from event to label in the sample")]
    v = d["validation"]
    out += ["# Data quality limits for jobs/validate.py (driftline.quality). Top-level limits",
            "# fail the run (exit code 3); the same keys under `warn:` only log a warning.",
            "validation:",
            _line(f"  max_quarantine_rate: {_flow(v['max_quarantine_rate'])}", "share of a run's records quarantined"),
            _line(f"  max_duplicate_rate: {_flow(v['max_duplicate_rate'])}", "share of records repeating an event id")]
    if "max_missing_rate" in v:
        out.append(_line(f"  max_missing_rate: {_flow(v['max_missing_rate'])}",
                         "optional fields: twice the sample's missing share + 0.05"))
    out += [f"  warn: {_flow(v['warn'])}",
            "  labels:",
            _line(f"    time_field: {_flow(v['labels']['time_field'])}", "when the label became known"),
            f"    max_quarantine_rate: {_flow(v['labels']['max_quarantine_rate'])}",
            f"    max_duplicate_rate: {_flow(v['labels']['max_duplicate_rate'])}"]
    f = d["features"]
    out += ["# Feature definitions (driftline.features): compiled for point-in-time batch",
            "# backfill, the online table and streaming windows. Windows: 30s, 10m, 1h, 24h, 7d.",
            "features:",
            _line(f"  entity: {_flow(f['entity'])}", "the entity the windows aggregate over")]
    if "aggregates" in f:
        out.append(_line("  aggregates:", "fn: count | sum | mean | std | distinct_count"))
        out += [f"    - {_flow(a)}" for a in f["aggregates"]]
    if "ratios" in f:
        out.append(_line("  ratios:", "null when the denominator is 0 or null"))
        out += [f"    - {_flow(r)}" for r in f["ratios"]]
    out += [f"  time_of_day: {_flow(f['time_of_day'])}",
            _line(f"  numeric: {_flow(f['numeric'])}", "numeric fields, passed through"),
            _line(f"  categorical: {_flow(f['categorical'])}", "few-valued strings and booleans, as text")]
    m = d["model"]
    out += ["# Model (jobs/train.py; schema in lib/driftline/training.py). Feature names are columns",
            f"# of gold/{d['name']}_features_offline. A simple, fast baseline: try gbt / random_forest next.",
            "model:",
            f"  numeric: {_flow(m['numeric'])}",
            f"  categorical: {_flow(m['categorical'])}",
            _line(f"  estimator: {_flow(m['estimator'])}",
                  "| random_forest | gbt" if m["estimator"] == "logistic_regression" else "| gbt_regressor"),
            f"  estimator_params: {_flow(m['estimator_params'])}",
            f"  impute: {_flow(m['impute'])}",
            f"  scale: {_flow(m['scale'])}"]
    if "threshold" in m:
        out.append(_line(f"  threshold: {_flow(m['threshold'])}", "score >= threshold counts as class 1"))
    out += [f"  split: {_flow(m['split'])}",
            _line(f"  search: {_flow(m['search'])}", "grid over regParam"),
            _line(f"  gate: {_flow(m['gate'])}", "a challenger must be at least as good as the champion"),
            _line(f"  profile: {_flow(m['profile'])}", "reference profile for drift")]
    dr = d["drift"]
    out += ["# Drift monitor (streaming/monitor.py): statistics per event-time window against the",
            "# champion's reference profile; the window holds about min_samples events at the sample's rate.",
            "drift:",
            _line(f"  window: {_flow(dr['window'])}", "tumbling event-time window"),
            _line(f"  lateness: {_flow(dr['lateness'])}", "a window is emitted once event time passes its end by this"),
            _line(f"  min_samples: {_flow(dr['min_samples'])}", "fewer rows in a window: written, never flagged"),
            _line(f"  alpha: {_flow(dr['alpha'])}", "false discovery rate across features"),
            _line(f"  features: {_flow(dr['features'])}", "default: the profile's features that are event fields"),
            _line(f"  performance: {_flow(dr['performance'])}", "a label later than this is not joined"),
            _line(f"  alert: {_flow(dr['alert'])}", "N drifted windows out of the last M")]
    s = d["streaming"]
    out += ["# Online scoring (streaming/score.py; schema in lib/driftline/scoring.py): the defaults.",
            "streaming:"]
    out += [f"  {k}: {_flow(val)}" for k, val in s.items()]
    r = d["routing"]
    out += [_line("routing:", "the default; `driftline route` changes it while queries run"),
            _line(f"  mode: {_flow(r['mode'])}", "champion | shadow (scored, never served) | canary"),
            _line(f"  share: {_flow(r['share'])}", "canary: share of entities served by the challenger")]
    return "\n".join(out) + "\n"
