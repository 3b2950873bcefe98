"""The typed sections of a use case, each parsed once when the use case is loaded.

One class per YAML section (and sub-section); the modules that use a section
import its type from here and never parse YAML themselves. Checks that need
more than one section (a feature naming a field of the schema, an estimator
fitting the label kind) live in :mod:`driftline.config.checks`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from driftline.config.base import Strict
from driftline.config.durations import parse_duration, whole_seconds
from driftline.errors import ConfigError

# --------------------------------------------------------------------------- features:

AggFn = Literal["count", "sum", "mean", "std", "distinct_count"]


def window_seconds(text: str) -> int:
    """Seconds in a feature window like ``30s``, ``10m``, ``1h``, ``24h``, ``7d``.

    Example::

        window_seconds("10m")  # 600
    """
    try:
        value = parse_duration(text) if isinstance(text, str) and text.strip()[-1:].isalpha() else None
    except ValueError:
        value = None
    if value is None or value <= 0 or value != int(value):
        raise ConfigError(f"window: expected a positive duration like 30s, 10m, 1h, 7d; got {text!r}")
    return int(value)


class Aggregate(Strict):
    """An aggregate of one entity's past events (or arrived labels) over a trailing window."""

    name: str = Field(min_length=1)
    fn: AggFn
    window: str
    column: str | None = None
    source: Literal["events", "labels"] = "events"

    @property
    def window_s(self) -> int:
        return window_seconds(self.window)


class Ratio(Strict):
    name: str = Field(min_length=1)
    numerator: str
    denominator: str


class TimeOfDay(Strict):
    """Hour of the event time (session time zone) and a 0/1 night flag."""

    hour: str | None = None
    is_night: str | None = None
    night_start: int = Field(22, ge=0, le=23)
    night_end: int = Field(6, ge=0, le=23)


class FeatureDefinitions(Strict):
    """The ``features:`` section."""

    entity: str | None = None
    aggregates: list[Aggregate] = Field(default_factory=list)
    ratios: list[Ratio] = Field(default_factory=list)
    time_of_day: TimeOfDay = TimeOfDay()
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    def time_features(self) -> list[str]:
        return [n for n in (self.time_of_day.hour, self.time_of_day.is_night) if n]

    def columns(self) -> list[str]:
        """Feature column names in output order: numeric, categorical, time of day, aggregates, ratios."""
        return [*self.numeric, *self.categorical, *self.time_features(), *(a.name for a in self.aggregates),
                *(r.name for r in self.ratios)]


# --------------------------------------------------------------------------- validation:


class Limits(Strict):
    """Upper limits on a run's quality metrics; None means no limit."""

    max_quarantine_rate: float | None = Field(None, ge=0, le=1)
    max_duplicate_rate: float | None = Field(None, ge=0, le=1)
    max_missing_rate: dict[str, float] = Field(default_factory=dict)


class DatasetLimits(Limits):
    """Error limits, plus ``warn:`` limits that only log."""

    warn: Limits = Limits()


class LabelValidation(DatasetLimits):
    time_field: str = "label_time"


class JsonSpec(Strict):
    """How strictly event and label records are read (``validation.json``).

    RFC 8259 by default: single-quoted strings and the non-numeric literals
    ``NaN``/``Infinity`` (bare, or quoted for a number field) make a record
    ``not_json`` or ``wrong_type``. Top-level fields the schema does not name are
    counted per field in the validation report (``extra: count``) or quarantined as
    ``unknown_field:<name>`` (``extra: forbid``).
    """

    single_quotes: bool = False
    non_numeric_numbers: bool = False
    extra: Literal["count", "forbid"] = "count"


class ValidationSpec(DatasetLimits):
    """The ``validation:`` section."""

    labels: LabelValidation = LabelValidation()
    json_: JsonSpec = Field(JsonSpec(), alias="json")

    def event_limits(self) -> DatasetLimits:
        return DatasetLimits.model_validate(self.model_dump(exclude={"labels", "json_"}))

    def label_limits(self) -> DatasetLimits:
        return DatasetLimits.model_validate(self.labels.model_dump(exclude={"time_field"}))


# --------------------------------------------------------------------------- model:

def optional_duration(v: str | None, examples: str) -> str | None:
    """A validator's check of an optional whole, positive duration (``ValueError`` naming examples)."""
    if v is not None:
        try:
            whole_seconds(v, key="window")
        except ConfigError as e:
            raise ValueError(f"got {v!r}, expected a whole, positive duration such as {examples}") from e
    return v


CLASSIFIER_NAMES = ("logistic_regression", "random_forest", "gbt")
REGRESSOR_NAMES = ("linear_regression", "gbt_regressor")


class SplitSpec(Strict):
    """How rows are split into train / validation / test."""

    method: Literal["time", "random"] = "time"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 42

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError(f"expected three positive fractions summing to 1, got {list(v)}")
        return v


class RangeSpec(Strict):
    """A random-search range of one parameter: uniform (or log-uniform) from ``min`` to ``max``."""

    min: int | float
    max: int | float
    log: bool = False


class SearchSpec(Strict):
    """Hyper-parameter search: a grid or ``n`` seeded random samples of ``params``."""

    method: Literal["grid", "random"] = "grid"
    n: int = Field(4, ge=1)
    params: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict)
    validation: Literal["train_validation_split", "cross_validation"] = "train_validation_split"
    folds: int = Field(3, ge=2)
    parallelism: int = Field(1, ge=1)
    metric: str | None = None


class GateSpec(Strict):
    """The quality gate a challenger must pass to become champion."""

    metric: str | None = None
    tolerance: float = Field(0.005, ge=0)
    min: float | None = None
    max: float | None = None


class ProfileSpec(Strict):
    bins: int = Field(10, ge=2)
    # relative error of the quantiles behind the bin edges; 0 (exact) cost ~28% of a 1M-row training run
    rel_error: float = Field(0.001, ge=0.0, le=0.1)


class PcaSpec(Strict):
    k: int = Field(ge=1)


class CardSpec(Strict):
    """``model.card``: what the model card written at registration says beyond the numbers
    (see :mod:`driftline.model_card`). ``slices``: categorical features whose values each get
    the test metrics of their rows; a slice with fewer than ``min_slice_rows`` rows (binary:
    or fewer than ``min_positives`` positives) is marked as too small. ``limits``: known
    limits in words, listed with the automatic ones (e.g. fewer than ``min_positives`` test
    positives)."""

    intended_use: str | None = None
    slices: list[str] = Field(default_factory=list)
    min_slice_rows: int = Field(100, ge=1)
    min_positives: int = Field(50, ge=1)
    limits: list[str] = Field(default_factory=list)


class RetentionSpec(Strict):
    """``model.retention``: how long the training table keeps old versions (Delta's
    ``delta.logRetentionDuration`` and ``delta.deletedFileRetentionDuration``; durations like
    ``30d``, ``12h``). These are floors: ``driftline vacuum`` (and each training run, when
    the margin runs low) sets both to the age of the oldest table version a registered model
    version was trained on plus the floor, so every registered version's data stays readable
    (see :mod:`driftline.retention`)."""

    log: str = "30d"
    deleted_files: str = "7d"

    @field_validator("log", "deleted_files")
    @classmethod
    def _duration(cls, v: str) -> str:
        try:
            parse_duration(v)
        except ValueError as e:
            raise ValueError(f"expected a duration such as 7d, 12h or 0s, got {v!r}") from e
        return v

    def seconds(self, which: Literal["log", "deleted_files"]) -> int:
        return int(math.ceil(parse_duration(getattr(self, which))))


THRESHOLD_RULES = {"max_f1": None, "recall_at_precision": "precision", "precision_at_recall": "recall"}


class ThresholdRule(Strict):
    """A binary decision threshold chosen on the validation split when the model is trained:
    the best F1, the best recall with ``precision`` at least the floor, or the best precision
    with ``recall`` at least the floor. ``fallback`` serves versions registered without a
    chosen threshold."""

    rule: Literal["max_f1", "recall_at_precision", "precision_at_recall"]
    precision: float | None = Field(None, gt=0, le=1)
    recall: float | None = Field(None, gt=0, le=1)
    fallback: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _floor(self) -> ThresholdRule:
        needed = THRESHOLD_RULES[self.rule]
        for key in ("precision", "recall"):
            given = getattr(self, key) is not None
            if key == needed and not given:
                raise ValueError(f"rule {self.rule!r} needs {key}: a floor in (0, 1], e.g. {{{key}: 0.5}}")
            if key != needed and given:
                raise ValueError(f"{key}: not a parameter of rule {self.rule!r}")
        return self

    @property
    def floor(self) -> float | None:
        needed = THRESHOLD_RULES[self.rule]
        return None if needed is None else getattr(self, needed)


def _threshold_kind(v: Any) -> str:
    return "ThresholdRule" if isinstance(v, dict | ThresholdRule) else "Number"


# a number or a rule; the tags name no YAML key, so errors read ``model.threshold.precision``
Threshold = Annotated[
    Annotated[Annotated[float, Field(gt=0, lt=1)], Tag("Number")] | Annotated[ThresholdRule, Tag("ThresholdRule")],
    Discriminator(_threshold_kind),
]


class ModelSpec(Strict):
    """The ``model:`` section (see :mod:`driftline.training`)."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    estimator: str
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    impute: Literal["median", "mean"] = "median"
    scale: bool = True
    pca: PcaSpec | None = None
    # binary labels: score >= threshold is class 1; a number, or a rule applied on the validation split
    threshold: Threshold = 0.5
    # binary labels: per-class weights of the training rows; balanced = n / (2 * n_class) on the train split
    class_weight: Literal["balanced"] | dict[int, float] | None = None
    split: SplitSpec = SplitSpec()
    search: SearchSpec = SearchSpec()
    gate: GateSpec = GateSpec()
    profile: ProfileSpec = ProfileSpec()
    card: CardSpec = CardSpec()
    retention: RetentionSpec = RetentionSpec()
    # train on the labelled rows of the last `window` of event time, up to the newest labelled row
    # (null: every row); a retrain started by an alert uses `retrain_window` instead when set: the
    # rows since the drift, not the months before it that the champion already learned
    window: str | None = None
    retrain_window: str | None = None
    # training rows are hash-partitioned by event id into this many partitions (sorted within),
    # so the same data gives the same model on any cluster; Spark adds partial sums in the order
    # tasks finish, so floating-point values can differ in their last bits (more so with more partitions)
    train_partitions: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _features(self) -> ModelSpec:
        if not self.numeric and not self.categorical:
            raise ValueError("numeric/categorical: at least one feature column is needed")
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns {both} are listed as both numeric and categorical")
        known = sorted({*CLASSIFIER_NAMES, *REGRESSOR_NAMES})
        if self.estimator not in known:
            raise ValueError(f"estimator: got {self.estimator!r}, expected one of {known}")
        odd = [c for c in self.card.slices if c not in self.categorical]
        if odd:
            raise ValueError(f"card.slices: {odd} are not categorical features of the model; expected some of "
                             f"{self.categorical}")
        return self

    @field_validator("window", "retrain_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        return optional_duration(v, "6h or 30d")

    @property
    def window_s(self) -> int | None:
        return None if self.window is None else whole_seconds(self.window, key="model.window")

    @field_validator("class_weight")
    @classmethod
    def _class_weight(cls, v: str | dict[int, float] | None) -> str | dict[int, float] | None:
        if isinstance(v, dict) and (set(v) != {0, 1} or not all(w > 0 and math.isfinite(w) for w in v.values())):
            raise ValueError(f"expected balanced, null or {{0: w0, 1: w1}} with positive weights, got {v}")
        return v

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def default_threshold(self) -> float:
        """The fixed threshold, or the rule's ``fallback`` (for versions without a chosen one)."""
        return self.threshold.fallback if isinstance(self.threshold, ThresholdRule) else self.threshold


# --------------------------------------------------------------------------- drift:

Source = Literal["drift", "quality", "performance"]
SOURCES: tuple[Source, ...] = ("drift", "quality", "performance")


class Thresholds(Strict):
    """Effect-size thresholds of one kind of feature (a statistic reaching it may be drifted)."""

    psi: float = Field(0.2, gt=0)
    js: float = Field(0.1, gt=0, le=1)
    wasserstein: float = Field(0.1, gt=0)
    unseen_share: float = Field(0.01, gt=0, le=1)


class CalibrationFloor(Strict):
    """The lowest calibrated threshold per statistic: a feature steadier than this still needs this effect."""

    psi: float = Field(0.01, ge=0)
    js: float = Field(0.02, ge=0, le=1)
    wasserstein: float = Field(0.01, ge=0)


class CalibrateSpec(Strict):
    """``drift.calibrate``: psi/js/wasserstein thresholds per feature (and for the score) from the
    spread of each statistic over chunks of the reference (the champion's training rows, its
    test scores), as NannyML does: ``mean + k * std`` of the chunk values, raised to just above
    the largest one (no reference chunk reaches its threshold), or the ``quantile`` of them
    instead; never below ``floor``. Chunks are ``window`` of event time (default
    ``drift.window``); when a window holds fewer than ``drift.min_samples`` rows on average or
    there are fewer than ``min_windows`` of them, chunks are as long as it takes to hold twice
    that many rows (see :mod:`driftline.calibration`). Computed when the model is trained and stored
    with its reference profile; the p-value condition is unchanged."""

    method: Literal["reference_windows"] = "reference_windows"
    window: str | None = None
    min_windows: int = Field(10, ge=3)
    k: float = Field(3.0, gt=0)
    quantile: float | None = Field(None, gt=0.5, le=1)
    floor: CalibrationFloor = CalibrationFloor()

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        return optional_duration(v, "1m or 1h")

    @model_validator(mode="after")
    def _one_rule(self) -> CalibrateSpec:
        if self.quantile is not None and "k" in self.model_fields_set:
            raise ValueError("k, quantile: give one rule, mean + k * std (k) or a quantile of the chunk values")
        return self


class QualitySpec(Strict):
    """Input and output limits per window; a rate above its limit is ``breached``."""

    missing_margin: float = Field(0.05, ge=0, le=1)   # above the reference's own missing rate
    max_missing_rate: dict[str, float] = Field(default_factory=dict)  # absolute, per column
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    max_null_prediction_rate: float = Field(0.0, ge=0, le=1)
    max_positive_rate: float | None = Field(None, ge=0, le=1)


class Bound(Strict):
    min: float | None = None
    max: float | None = None


class PerformanceSpec(Strict):
    """Online performance once labels arrive: thresholds, minimum labels, join horizon."""

    min_labels: int = Field(200, ge=1)
    min_positives: int = Field(10, ge=1)
    score_bins: int = Field(1000, ge=10)
    max_label_delay: str = "1h"
    thresholds: dict[str, Bound] = Field(default_factory=dict)


class AlertRule(Strict):
    """``drift.alert``: alert when ``n`` of the last ``m`` windows are bad."""

    n: int = Field(2, ge=1, description="bad windows needed among the last m")
    m: int = Field(3, ge=1, description="how many of the latest windows to look at")
    retrain: bool = Field(True, description="ask jobs/pipeline.py --on-alert to retrain")
    cooldown_windows: int | None = Field(None, ge=0, description="windows after an alert without a new one [m]")
    sources: tuple[Source, ...] = Field(SOURCES, min_length=1, description="monitoring tables that count")

    @model_validator(mode="after")
    def _n_at_most_m(self) -> AlertRule:
        if self.n > self.m:
            raise ValueError(f"n ({self.n}) must not exceed m ({self.m})")
        return self

    @property
    def cooldown(self) -> int:
        return self.m if self.cooldown_windows is None else self.cooldown_windows

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m, "cooldown_windows": self.cooldown, "retrain": self.retrain,
                "sources": list(self.sources)}


WINDOW_ORIGINS = ("epoch", "training_start")


def window_origin(value: Any) -> str:
    """``drift.origin`` as kept: ``epoch``, ``training_start`` or an ISO 8601 time in UTC. A time
    without an offset is UTC; YAML hands an unquoted time over as a datetime (or a date).

        >>> window_origin("2024-01-01T00:00:30+02:00")
        '2023-12-31T22:00:30+00:00'
    """
    if isinstance(value, str) and value.strip() in WINDOW_ORIGINS:
        return value.strip()
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"got {value!r}, expected epoch, training_start or an ISO 8601 time such as "
                             "2024-01-01T00:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()


class DriftSpec(Strict):
    """The ``drift:`` section (see conf/usecases/fraud.yaml)."""

    window: str = "1m"
    lateness: str = "2m"
    # where the tumbling windows are aligned (window_origin): epoch, training_start or a time
    origin: str = "epoch"
    min_samples: int = Field(500, ge=1)
    alpha: float = Field(0.01, gt=0, lt=1)
    features: list[str] | None = None
    numeric: Thresholds = Thresholds()
    categorical: Thresholds = Thresholds()
    prediction: Thresholds = Thresholds()
    quality: QualitySpec = QualitySpec()
    performance: PerformanceSpec = PerformanceSpec()
    alert: AlertRule = AlertRule()
    # null: the fixed thresholds above; a mapping: thresholds calibrated on the reference (CalibrateSpec)
    calibrate: CalibrateSpec | None = None

    @property
    def window_s(self) -> int:
        return whole_seconds(self.window, key="drift.window")

    @property
    def calibrate_window_s(self) -> int:
        """Seconds of event time per reference chunk: ``drift.calibrate.window``, else ``drift.window``."""
        if self.calibrate is not None and self.calibrate.window is not None:
            return whole_seconds(self.calibrate.window, key="drift.calibrate.window")
        return self.window_s

    @field_validator("origin", mode="before")
    @classmethod
    def _origin(cls, v: Any) -> str:
        return window_origin(v)

    @property
    def lateness_s(self) -> int:
        return whole_seconds(self.lateness, key="drift.lateness", allow_zero=True)

    @property
    def label_delay_s(self) -> int:
        return whole_seconds(self.performance.max_label_delay, key="drift.performance.max_label_delay")


# --------------------------------------------------------------------------- streaming:, routing:


class StreamingSpec(Strict):
    """The ``streaming:`` section: the online scoring query."""

    trigger: str = "5 seconds"
    dedupe_window: str = "10 minutes"
    max_offsets_per_trigger: int | None = Field(100_000, ge=1)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    stream_window_max: str = "1h"
    # how far behind the stream's newest event time a late event may arrive and still see
    # every earlier event its windows need (state keeps that much more event time)
    allowed_lateness: str = "10 minutes"
    # entities are hashed into this many state rows, each read and written once a micro-batch
    state_buckets: int = Field(64, ge=1, le=4096)
    publish: bool = True
    # Kafka offsets deleted (retention) before the query read them: false skips them and records
    # a data-loss alert (topic, partition, offsets) in monitoring/<uc>_alerts; true stops the query
    fail_on_data_loss: bool = False

    @property
    def dedupe_window_s(self) -> int:
        return whole_seconds(self.dedupe_window, key="streaming.dedupe_window", words=True)

    @property
    def stream_window_max_s(self) -> int:
        return whole_seconds(self.stream_window_max, key="streaming.stream_window_max", words=True)

    @property
    def allowed_lateness_s(self) -> int:
        return whole_seconds(self.allowed_lateness, key="streaming.allowed_lateness", allow_zero=True, words=True)


class RoutingSpec(Strict):
    """How the challenger takes part: not at all, in shadow, or serving a canary share."""

    mode: Literal["champion", "shadow", "canary"] = "shadow"
    share: float = Field(0.05, ge=0.0, le=1.0)


class Guardrails(Strict):
    """Limits that roll a challenger back at once, whatever the test says (``delivery.guardrails``).

    ``metric_drop``: the challenger's metric is worse than the champion's on the same events by
    more than this (absolute); ``null_prediction_rate``, ``quarantine_rate``: its rate exceeds the
    champion's by more than this; ``latency_ratio``: its scoring latency exceeds the champion's
    by more than this factor."""

    metric_drop: float = Field(0.05, ge=0)
    null_prediction_rate: float = Field(0.001, ge=0, le=1)
    quarantine_rate: float = Field(0.02, ge=0, le=1)
    latency_ratio: float | None = Field(3.0, gt=1)


class DeliverySpec(Strict):
    """The ``delivery:`` section: how a challenger earns its traffic.

    ``mode: progressive``: a challenger that passes the offline gate goes to shadow (never
    straight to champion); it then moves through the canary ``steps`` and becomes champion
    only when, at each stage, a one-sided non-inferiority ``test`` on the same labelled events
    says it is not worse than the champion by more than ``margin`` (error rate ``alpha``), with
    at least ``min_labels`` labelled events (and ``min_positives`` positives, binary) per model
    at that stage. A tripped guardrail rolls it back at once. ``mode: direct``: a gate pass
    promotes at once (the behaviour before progressive delivery). The first model of a use
    case always becomes champion directly.
    """

    mode: Literal["progressive", "direct"] = "progressive"
    steps: tuple[float, ...] = Field((0.05, 0.25, 0.5), min_length=0)
    metric: str | None = None            # default: the gate metric (roc_auc / rmse ...)
    test: Literal["delong", "bootstrap", "paired_abs_error"] | None = None  # default: delong | paired_abs_error
    margin: float = Field(0.01, ge=0)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_labels: int = Field(500, ge=10)
    min_positives: int = Field(20, ge=1)
    bootstrap_samples: int = Field(1000, ge=100)
    interval: str = "30s"                # how often `driftline run` evaluates a step
    guardrails: Guardrails = Guardrails()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"expected strictly increasing canary shares between 0 and 1, got {list(steps)}")
        return steps

    @property
    def interval_s(self) -> int:
        return whole_seconds(self.interval, key="delivery.interval", words=True)
