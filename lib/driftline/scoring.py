"""Online scoring in Structured Streaming: Kafka events → features → champion,
shadow or canary challenger → Delta (exactly once) and Kafka.

One query, one pass per micro-batch::

    Kafka <uc>.events
      → parse and check every record once (driftline.quality.check_records)
      → transformWithStateInPandas keyed by entity bucket (driftline.entity_state): each
        event's stream aggregates (windows up to ``streaming.stream_window_max``, the batch
        definition) from the events its bucket keeps in the state store; a repeat of a kept
        event id is marked ``duplicate``; bad records pass through in a bucket of their own
      → an event older than its bucket's state can hold (a repeat sent after the dedupe
        window looks like that) is looked up among the event ids already in predictions/<uc>
        (a cold path: those events only, data-skipped on event time); found: ``duplicate``
      → foreachBatch (:class:`BatchScorer`):
          1. the batch's plan: champion / challenger versions, routing and the version of
             gold/<uc>_features_online, decided once per batch id and kept next to the
             checkpoint, so a replay scores with the same models and features
          2. features completed in the same plan: longer windows and label aggregates from
             the online table (read once per Delta version, cached), time of day, ratios
          3. champion scores natively (PipelineModel.transform); the challenger in shadow
             (scored, stored, never served) or canary (a stable hash of the entity picks
             ``share`` of entities, served by the challenger; both models still score every
             event, the unserved rows as routes ``shadow`` / ``control``, so delivery compares
             them on the same events); class 1 when score >= the model version's decision
             threshold (tag ``driftline.decision_threshold``, loaded with the model)
          4. one Delta append per table with txnAppId/txnVersion = (query, batch id):
             predictions/<uc>, gold/<uc>_features_stream (what was served), quarantine/<uc>_events_stream
          5. one Kafka write: served predictions → <uc>.predictions, bad records → <uc>.dlq
             (at least once; keyed by event id)

No table that grows with history is read on the hot path; counts come from ``observe``.

Settings (use-case YAML)::

    streaming:
      trigger: 5 seconds               # or availableNow / once
      dedupe_window: 10 minutes        # a repeat of an event id within this much event time is quarantined
      max_offsets_per_trigger: 100000
      starting_offsets: earliest       # | latest, for a new checkpoint
      stream_window_max: 1h            # aggregates over longer windows come from the online table
      allowed_lateness: 10 minutes     # a late event still sees every earlier event its windows need
      state_buckets: 64                # entities hashed into this many state rows
      publish: true                    # <uc>.predictions and <uc>.dlq
      fail_on_data_loss: false         # offsets deleted by retention before they were read: skipped and
                                       # recorded as a data-loss alert (driftline.kafka.gaps); true: stop
    routing:
      mode: shadow                     # champion | shadow | canary
      share: 0.05                      # canary: share of entities served by the challenger

``driftline route --usecase fraud --mode canary --share 0.25`` changes the
routing of a running query at its next batch (registered-model tags), as
``driftline promote`` / ``rollback`` change the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from driftline import catalog
from driftline.catalog import PREDICTION_SCHEMA
from driftline.config import PlatformConfig, UseCaseConfig, section_error, trigger_options
from driftline.config.sections import RoutingSpec, StreamingSpec
from driftline.delta import latest_version, read_delta, write_delta
from driftline.entity_state import (
    ARRIVAL,
    BAD_BUCKET,
    BUCKET,
    DUPLICATE,
    ENTITY,
    ID_HASH,
    NULL_HASH,
    STALE,
    TS,
    BucketFeatures,
    StateLayout,
)
from driftline.errors import ConfigError, RegistryError
from driftline.features import (
    FeatureSpec,
    feature_spec,
    with_ratios,
)
from driftline.kafka.gaps import GapDetector
from driftline.kafka.spark import raw_records, read_kafka_stream
from driftline.quality import event_dataset

log = logging.getLogger(__name__)

# served: champion | challenger (canary entities); unserved: shadow (the challenger beside a served
# champion) | control (the champion beside a served canary challenger)
ROUTES = ("champion", "challenger", "shadow", "control")
CONTROL = "control"
MODE_TAG = "driftline.routing.mode"
SHARE_TAG = "driftline.routing.share"
BUCKETS = 10_000
CANARY_SALT = "driftline-canary"
# Test hook: after writing the predictions of this batch id, touch a marker file and wait,
# so a test can kill -9 the driver in the middle of a batch (before Spark commits it).
FAULT_PAUSE_ENV = "DRIFTLINE_FAULT_PAUSE_AFTER_WRITE"
# <uc>.dlq carries at most this many characters of a bad record's value (JSON escaping can make
# each up to 6 bytes: well under the producer's 1 MiB max.request.size)
DLQ_VALUE_MAX = 100_000


def streaming_spec(uc: UseCaseConfig) -> StreamingSpec:
    """The use case's ``streaming:`` section (parsed and checked at load)."""
    return uc.streaming


def routing_spec(uc: UseCaseConfig) -> RoutingSpec:
    """The use case's ``routing:`` section: the default before any ``driftline route``."""
    return uc.routing


# --------------------------------------------------------------------------- tables


def predictions_path(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.path(platform, "predictions", uc)


def features_stream_path(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.path(platform, "features_stream", uc)


def quarantine_stream_path(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.path(platform, "quarantine_events_stream", uc)


def score_checkpoint(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    return catalog.checkpoint(platform, "score", uc)


# --------------------------------------------------------------------------- routing


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which models score one batch id, and how the challenger is routed."""

    batch_id: int
    champion_version: int
    challenger_version: int | None
    mode: str
    share: float
    online_version: int | None = None  # gold/<uc>_features_online as of this batch (a replay reads the same)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchPlan:
        return cls(**json.loads(text))


class CheckpointFiles:
    """Small text files in and next to a checkpoint, on any Hadoop file system (like the checkpoint)."""

    def __init__(self, spark: SparkSession, checkpoint: str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self.root = checkpoint.rstrip("/")
        self._fs = jvm.org.apache.hadoop.fs.Path(self.root).getFileSystem(
            spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]

    def _path(self, name: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{name}")

    def read(self, name: str) -> str | None:
        path = self._path(name)
        if not self._fs.exists(path):
            return None
        stream = self._fs.open(path)
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write(self, name: str, text: str) -> None:
        out = self._fs.create(self._path(name), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()

    def numbers(self, directory: str) -> list[int]:
        """The numbered files of ``directory`` (Spark's ``offsets/`` and ``commits/`` logs), sorted."""
        path = self._path(directory)
        if not self._fs.exists(path):
            return []
        names = (str(st.getPath().getName()) for st in self._fs.listStatus(path))
        return sorted(int(n) for n in names if n.isdigit())


class PlanLog:
    """One small JSON file per batch id under ``<checkpoint>/driftline-plans``: written before
    the batch writes anything, read back when Spark replays the batch id."""

    def __init__(self, spark: SparkSession, checkpoint: str) -> None:
        self._files = CheckpointFiles(spark, checkpoint)

    def get(self, batch_id: int) -> BatchPlan | None:
        text = self._files.read(f"driftline-plans/{batch_id}")
        return None if text is None else BatchPlan.from_json(text)

    def put(self, plan: BatchPlan) -> None:
        self._files.write(f"driftline-plans/{plan.batch_id}", plan.to_json())


# The scoring query's plan, recorded in its checkpoint. Spark cannot restart a checkpoint
# under a changed stateful plan; this says so at once, with what to do.
QUERY_LAYOUT = "driftline-scoring 2 (per-entity state in buckets)"


def check_checkpoint(spark: SparkSession, checkpoint: str) -> None:
    """Refuse a checkpoint written by another version of the scoring query, naming the migration."""
    files = CheckpointFiles(spark, checkpoint)
    layout = files.read("driftline-layout")
    if layout is None and files.numbers("offsets"):
        raise ConfigError(
            f"checkpoint {checkpoint}: written by an earlier scoring query whose state Spark cannot reuse. "
            f"Start on a new checkpoint from where it stopped: streaming/score.py --usecase <uc> "
            f"--checkpoint <new path> --migrate-from {checkpoint}"
        )
    if layout is not None and layout.strip() != QUERY_LAYOUT:
        raise ConfigError(f"checkpoint {checkpoint}: written by {layout.strip()!r}, this is {QUERY_LAYOUT!r}; "
                          "use a new checkpoint with --migrate-from")


def check_checkpoint_topic(spark: SparkSession, checkpoint: str, topic: str) -> None:
    """Refuse a checkpoint whose offsets log reads another topic (another use case's query):
    Spark would mix that query's state and offsets into this one."""
    files = CheckpointFiles(spark, checkpoint)
    planned = files.numbers("offsets")
    if not planned:
        return
    lines = (files.read(f"offsets/{planned[-1]}") or "").splitlines()
    topics: set[str] = set()
    for line in lines[2:]:
        with contextlib.suppress(ValueError):
            source = json.loads(line)
            topics.update(source if isinstance(source, dict) else ())
    if topics and topics != {topic}:
        raise ConfigError(
            f"checkpoint {checkpoint}: it belongs to the query reading {', '.join(sorted(topics))}, not {topic} "
            f"(another use case's checkpoint); give each query its own: --checkpoint <empty path>, or leave "
            f"--checkpoint out for <checkpoint_root>/score/<uc>"
        )


def migration_offsets(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, old_checkpoint: str) -> str:
    """Kafka starting offsets (Spark's JSON) for a new scoring checkpoint that takes over
    from ``old_checkpoint``: the end offsets of the newest batch whose predictions reached
    ``predictions/<uc>`` (one atomic Delta commit per batch), so nothing is scored twice and
    nothing is skipped. Run it with the old query stopped.

    Example::

        migration_offsets(spark, platform, uc, "/ck/score/fraud")  # '{"fraud.events": {"0": 812, ...}}'
    """
    files = CheckpointFiles(spark, old_checkpoint)
    planned = files.numbers("offsets")
    if not planned:
        raise ConfigError(f"--migrate-from {old_checkpoint}: no offsets log there; is it a streaming checkpoint?")
    path = predictions_path(platform, uc)
    written = read_delta(spark, path).agg(F.max("batch_id").alias("b")).first() if latest_version(spark, path) \
        is not None else None
    last = None if written is None or written["b"] is None else int(written["b"])
    if last is None:
        return "earliest"
    if last not in planned:
        raise ConfigError(f"--migrate-from {old_checkpoint}: predictions hold batch {last}, which its offsets log "
                          f"no longer has (kept: {planned[0]}..{planned[-1]}); is this the right checkpoint?")
    lines = (files.read(f"offsets/{last}") or "").splitlines()
    sources = [line for line in lines[2:] if line.strip().startswith("{")]
    if len(sources) != 1:
        raise ConfigError(f"--migrate-from {old_checkpoint}: expected one Kafka source in offsets/{last}")
    return sources[0].strip()


def current_routing(tags: dict[str, str], default: RoutingSpec) -> RoutingSpec:
    """The routing in effect: registered-model tags set by ``driftline route``, else the YAML."""
    mode = tags.get(MODE_TAG, default.mode)
    share = float(tags.get(SHARE_TAG, default.share))
    return _routing(mode, share)


def _routing(mode: str, share: float) -> RoutingSpec:
    try:
        return RoutingSpec.model_validate({"mode": mode, "share": share})
    except ValidationError as e:
        raise section_error("routing", e, prefix="routing") from e


def canary_bucket(entity: Column) -> Column:
    """A stable bucket in [0, 10000) per entity: the same entity always lands in the same
    bucket, so ramping the share 5% → 25% only adds entities to the canary."""
    return F.pmod(F.xxhash64(F.lit(CANARY_SALT), entity.cast("string")), F.lit(BUCKETS))


def in_canary(entity: Column, share: float) -> Column:
    return canary_bucket(entity) < F.lit(int(round(share * BUCKETS)))


def set_routing(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, mode: str, share: float | None
                ) -> RoutingSpec:
    """Change the routing of ``<uc>-model`` (read by running queries at their next batch); audited.

    Example::

        set_routing(spark, platform, uc, "canary", 0.25)
    """
    from driftline.registry import audit_path, client_for, model_name, record_event

    client = client_for(platform)
    name = model_name(uc)
    before = current_routing(dict(client.get_registered_model(name).tags), routing_spec(uc))
    new = _routing(mode, before.share if share is None else share)
    client.set_registered_model_tag(name, MODE_TAG, new.mode)
    client.set_registered_model_tag(name, SHARE_TAG, repr(new.share))
    record_event(spark, audit_path(platform, uc), action="route", model=name,
                 reason=f"routing {before.mode}/{before.share:g} -> {new.mode}/{new.share:g}",
                 metrics={"share": new.share})
    return new


def decide_plan(platform: PlatformConfig, uc: UseCaseConfig, batch_id: int) -> BatchPlan:
    """Read the aliases and routing from the registry now."""
    from driftline.registry import CHALLENGER, CHAMPION, alias_version, client_for, model_name

    client = client_for(platform)
    name = model_name(uc)
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"scoring: {name} has no {CHAMPION!r} version; train and promote a model first")
    challenger = alias_version(client, name, CHALLENGER)
    routing = current_routing(dict(client.get_registered_model(name).tags), routing_spec(uc))
    if challenger == champion or routing.mode == "champion":
        challenger = None
    return BatchPlan(batch_id, champion, challenger, routing.mode if challenger else "champion", routing.share)


# --------------------------------------------------------------------------- features


def split_aggregates(spec: FeatureSpec, window_max_s: int) -> tuple[FeatureSpec, list[str]]:
    """The spec of the aggregates computed from the stream, and the names read from the online table."""
    stream = [a for a in spec.aggregates if a.source == "events" and a.window_s <= window_max_s]
    table = [a.name for a in spec.aggregates if a not in stream]
    defs = spec.definitions.model_copy(update={"aggregates": stream, "ratios": []})
    return dataclasses.replace(spec, definitions=defs), table


def finish_features(events: DataFrame, online: DataFrame | None, spec: FeatureSpec, table_names: Sequence[str]
                    ) -> DataFrame:
    """Complete the features of a batch of events that carry the stream's aggregates
    (:class:`~driftline.entity_state.EntityFeatures`): time of day, categorical values as
    strings, the aggregates read from ``online`` (``gold/<uc>_features_online``; 0 for counts
    and sums of an unknown entity, null otherwise) and the ratios. Every input column flows
    through; the feature columns are ``spec.columns()``.

    Example::

        finish_features(batch_with_stream_aggregates, online, feature_spec(uc), ["txn_count_24h"])
    """
    from driftline.features import event_feature, time_of_day_columns

    fns = {a.name: a.fn for a in spec.aggregates}
    if table_names and online is not None:
        looked_up = events.join(
            F.broadcast(online.select(F.col(spec.entity), *[F.col(n).alias(f"_online_{n}") for n in table_names])),
            spec.entity, "left",
        )
    else:
        looked_up = events.select("*", *[F.lit(None).cast("double").alias(f"_online_{n}") for n in table_names])
    filled = [
        (F.coalesce(F.col(f"_online_{n}"), F.lit(0)) if fns[n] in ("count", "sum", "distinct_count")
         else F.col(f"_online_{n}")).alias(n)
        for n in table_names
    ]
    base = [event_feature(spec, c) for c in events.columns if c not in table_names]
    out = looked_up.select(*base, *time_of_day_columns(spec), *filled)
    return with_ratios(out, spec.ratios)


# --------------------------------------------------------------------------- scoring


def _scored(model: PipelineModel, df: DataFrame, uc: UseCaseConfig, threshold: float, *, route: str, served: bool,
            name: str, version: int) -> DataFrame:
    from driftline.training import decision, score_column

    out = model.transform(df)
    score = score_column(uc.label.kind)
    prediction = decision(score, uc.label.kind, threshold)
    return out.select(
        F.col(uc.event_id).cast("string").alias("event_id"),
        F.col(uc.entity_key).cast("string").alias("entity"),
        F.col(uc.event_time).alias("event_time"),
        score.alias("score"),
        prediction.alias("prediction"),
        F.lit(served).alias("served"),
        F.lit(route).alias("route"),
        F.lit(name).alias("model_name"),
        F.lit(version).cast("int").alias("model_version"),
        F.col("kafka_timestamp"),
    )


def route_and_score(
    features: DataFrame, plan: BatchPlan, models: dict[int, PipelineModel], uc: UseCaseConfig,
    thresholds: Mapping[int, float], name: str,
) -> DataFrame:
    """Predictions of one batch under ``plan``: champion served for everything (champion
    mode), plus the challenger unserved (shadow); in canary both models score every event and
    the stable entity hash picks the served one: the canary entities are served by the
    challenger (route ``challenger``) with the champion's unserved row as ``control``, the
    others by the champion (``champion``) with the challenger's unserved row as ``shadow``.
    Exactly one row per event is served, and in shadow and canary both models score the same
    events (the paired evidence of :mod:`driftline.delivery`). Each model decides at its
    version's threshold, ``thresholds[version]``."""
    champ, champ_t = models[plan.champion_version], thresholds[plan.champion_version]
    common = {"name": name}
    if plan.challenger_version is None or plan.mode == "champion":
        return _scored(champ, features, uc, champ_t, route="champion", served=True,
                       version=plan.champion_version, **common)
    chall, chall_t = models[plan.challenger_version], thresholds[plan.challenger_version]
    if plan.mode == "shadow":
        served = _scored(champ, features, uc, champ_t, route="champion", served=True,
                         version=plan.champion_version, **common)
        shadow = _scored(chall, features, uc, chall_t, route="shadow", served=False,
                         version=plan.challenger_version, **common)
        return served.unionByName(shadow)
    # canary: both models score every event, so that delivery compares them on the same events;
    # the stable hash picks which one is served (exactly one served row per event)
    by_champion = _scored(champ, features, uc, champ_t, route="champion", served=True,
                          version=plan.champion_version, **common)
    by_challenger = _scored(chall, features, uc, chall_t, route="challenger", served=True,
                            version=plan.challenger_version, **common)
    in_share = in_canary(F.col("entity"), plan.share)  # the entity key as a string, hashed as before
    champion_rows = by_champion.select(
        *[F.col(c) for c in by_champion.columns if c not in ("served", "route")],
        (~in_share).alias("served"), F.when(in_share, F.lit(CONTROL)).otherwise(F.lit("champion")).alias("route"))
    challenger_rows = by_challenger.select(
        *[F.col(c) for c in by_challenger.columns if c not in ("served", "route")],
        in_share.alias("served"), F.when(in_share, F.lit("challenger")).otherwise(F.lit("shadow")).alias("route"))
    return champion_rows.unionByName(challenger_rows)


def _publish(df: DataFrame, platform: PlatformConfig, topic: str, key: Column) -> None:
    """Write ``df`` as JSON values to ``topic`` (at least once)."""
    (
        df.select(key.cast("string").alias("key"), F.to_json(F.struct(*[F.col(c) for c in df.columns])).alias("value"))
        .write.format("kafka").options(**platform.kafka.client_options("spark")).option("topic", topic).save()
    )


class BatchScorer:
    """The ``foreachBatch`` function of the scoring query (see the module docstring).

    Each micro-batch arrives with its stream aggregates already computed by the stateful
    operator, and good and bad records side by side. One pass: the plan (models, routing,
    online-table version), features completed in the same plan, scores, then one Delta
    append per table (with the query's transaction ids) and one Kafka write for served
    predictions and DLQ records. Counts come from ``observe``, never from an extra job.

    ``idempotent=False`` drops the Delta transaction ids; it exists so that the
    crash test can show what they protect against. ``guard_repeats=False`` skips the lookup
    of events older than their state (:meth:`served_before`), for the test that shows what
    it protects against: a repeat sent after the dedupe window is then served twice.
    """

    def __init__(self, spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, checkpoint: str, *,
                 idempotent: bool = True, guard_repeats: bool = True, detect_gaps: bool = True) -> None:
        from driftline.registry import model_name

        self.spark, self.platform, self.uc = spark, platform, uc
        self.stream = streaming_spec(uc)
        self.features = feature_spec(uc)
        self.dataset = event_dataset(uc)
        self.window_max_s = self.stream.stream_window_max_s
        _, self.table_names = split_aggregates(self.features, self.window_max_s)
        self.name = model_name(uc)
        self.idempotent = idempotent
        self.guard_repeats = guard_repeats
        # offsets retention deleted before this query read them (failOnDataLoss false skips them):
        # recorded as a data-loss alert; detect_gaps=False is the retention test's negative control
        self.gaps = GapDetector(CheckpointFiles(spark, checkpoint).read, platform.kafka) if detect_gaps else None
        self.app_id = "driftline-score-" + hashlib.sha256(checkpoint.encode()).hexdigest()[:16]
        self.models: dict[int, PipelineModel] = {}
        self.thresholds: dict[int, float] = {}  # each version's decision threshold, loaded with its model
        self.plans = PlanLog(spark, checkpoint)
        self.last_plan: BatchPlan | None = None
        self.online_path = catalog.path(platform, "features_online", uc)
        self._online: tuple[int, DataFrame] | None = None
        self.timings: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.replaying = False

    # -- plans, models and the online table

    def plan(self, batch_id: int) -> BatchPlan:
        """The recorded plan of ``batch_id`` (a replay), else a new one, recorded before use."""
        recorded = self.plans.get(batch_id)
        self.replaying = recorded is not None
        if recorded is not None:
            log.info("batch %d: replay, scoring with the recorded plan %s", batch_id, recorded)
            return recorded
        plan = decide_plan(self.platform, self.uc, batch_id)
        if self.table_names:
            plan = dataclasses.replace(plan, online_version=latest_version(self.spark, self.online_path))
        self.plans.put(plan)
        last = self.last_plan
        if last and dataclasses.replace(last, batch_id=batch_id) != plan:
            log.info("batch %d: plan changed: champion v%s -> v%s, challenger %s -> %s (%s %.2f), online v%s -> v%s",
                     batch_id, last.champion_version, plan.champion_version, last.challenger_version,
                     plan.challenger_version, plan.mode, plan.share, last.online_version, plan.online_version)
        self.last_plan = plan
        return plan

    def model(self, version: int) -> PipelineModel:
        if version not in self.models:
            import mlflow.spark

            from driftline.registry import client_for, version_threshold

            client = client_for(self.platform)
            started = time.monotonic()
            self.models[version] = mlflow.spark.load_model(f"models:/{self.name}/{version}")
            self.thresholds[version] = version_threshold(client, self.uc, version)
            rule = (f"threshold {self.thresholds[version]:.6g}" if self.uc.label.kind == "binary"
                    else "regression: no threshold")
            log.info("loaded %s v%d (%s) in %.1fs", self.name, version, rule, time.monotonic() - started)
        return self.models[version]

    def warm_up(self) -> None:
        """Load the models in effect now, before the query starts: reading a Spark ML pipeline
        runs dozens of small Spark jobs, which would otherwise land on the first micro-batch."""
        try:
            plan = decide_plan(self.platform, self.uc, -1)
        except RegistryError:
            return  # no champion yet: the first batch says so
        for version in (plan.champion_version, plan.challenger_version):
            if version is not None:
                self.model(version)

    def online(self, version: int | None) -> DataFrame | None:
        """The online table at ``version``, read once per version and cached (never per batch)."""
        if version is None or not self.table_names:
            return None
        if self._online is None or self._online[0] != version:
            if self._online is not None:
                self._online[1].unpersist()
            table = read_delta(self.spark, self.online_path, version)
            columns = [self.features.entity, *self.table_names]
            self._online = (version, table.select(*[F.col(c) for c in columns]).persist())
        return self._online[1]

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.monotonic() - started

    def _txn(self, batch_id: int, table: str) -> tuple[str, int] | None:
        return (f"{self.app_id}-{table}", batch_id) if self.idempotent else None

    def served_before(self, rows: DataFrame, batch_id: int) -> set[str]:
        """The event ids among ``rows``' good events flagged :data:`STALE` (older than their
        bucket's state can hold, so the state could not tell a repeat) that predictions/<uc>
        already holds from another batch: repeats sent after ``streaming.dedupe_window``.

        One small job per batch collects the flagged ids (usually none, and it fills the
        batch's cache); only when there are some is predictions/<uc> read, filtered on those
        ids and their event-time range (Delta skips the files outside it). Rows of this batch
        id are left out, so a replay decides as its first attempt did."""
        uc = self.uc
        stale = rows.where(F.col(STALE) & F.col("reason").isNull()).select(
            F.col(uc.event_id).cast("string").alias("id"), F.unix_micros(F.col(uc.event_time)).alias("t"),
        ).collect()
        path = predictions_path(self.platform, uc)
        if not stale or latest_version(self.spark, path) is None:
            return set()
        ids = sorted({r["id"] for r in stale if r["id"] is not None})
        times = [int(r["t"]) for r in stale if r["t"] is not None]
        served = read_delta(self.spark, path).where((F.col("batch_id") != F.lit(batch_id))
                                                    & F.col("event_id").isin(ids))
        if len(times) == len(stale):
            served = served.where(F.col("event_time").between(F.timestamp_micros(F.lit(min(times))),
                                                              F.timestamp_micros(F.lit(max(times)))))
        found = {r["event_id"] for r in served.select("event_id").distinct().collect()}
        log.info("batch %d: %d events older than their state, %d of them already served (repeats)", batch_id,
                 len(stale), len(found))
        return found

    # -- one micro-batch

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self.timings = {}
        with self._timed("plan"):
            plan = self.plan(batch_id)
            models = {v: self.model(v) for v in (plan.champion_version, plan.challenger_version) if v is not None}
        is_bad = F.col("reason").isNotNull()
        observation = Observation(f"score-{uuid.uuid4().hex[:8]}")
        cached = batch.observe(
            observation, F.count(F.lit(1)).alias("rows"), F.count_if(is_bad).alias("quarantined"),
            F.count_if(F.col("reason") == F.lit(DUPLICATE)).alias("duplicates"),
        ).persist()
        rows = cached
        try:
            repeats = self.served_before(cached, batch_id) if self.guard_repeats else set()
            if repeats:
                again = F.col(STALE) & F.col("reason").isNull() & F.col(self.uc.event_id).cast("string").isin(
                    sorted(repeats))
                rows = cached.withColumns({
                    "reason": F.when(again, F.lit(DUPLICATE)).otherwise(F.col("reason")),
                    "reasons": F.when(again, F.array(F.lit(DUPLICATE))).otherwise(F.col("reasons")),
                })
            events = rows.where(~is_bad).drop("value", "reason", "reasons", "key", "ingest_time", STALE)
            features = finish_features(events, self.online(plan.online_version), self.features, self.table_names)
            predictions = (
                route_and_score(features, plan, models, self.uc, self.thresholds, self.name)
                .withColumn("batch_id", F.lit(batch_id).cast("long"))
                .withColumn("scoring_time", F.current_timestamp())
                .select(*[F.col(f.name).cast(f.dataType) for f in PREDICTION_SCHEMA.fields])
            ).persist()
            try:
                with self._timed("score"):
                    write_delta(predictions, predictions_path(self.platform, self.uc), mode="append",
                                txn=self._txn(batch_id, "predictions"))
                if self.replaying:
                    # Delta skips a write whose transaction id it already has, without running the
                    # plan: on a replay, run it once so the counts (and the cache) exist
                    rows.count()
                self.counts = {k: int(v or 0) for k, v in observation.get.items()}
                lost = self.gaps.check(rows, batch_id, self.counts["rows"]) if self.gaps is not None else []
                if lost:
                    from driftline.alerts import record_data_loss

                    record_data_loss(self.spark, self.platform, self.uc, lost)
                if repeats:  # found after the observation: added to its counts
                    guarded = rows.where(F.col(STALE) & (F.col("reason") == F.lit(DUPLICATE))).count()
                    self.counts["quarantined"] += guarded
                    self.counts["duplicates"] += guarded
                bad = rows.where(is_bad)
                quarantined = bool(self.counts["quarantined"])
                writes: list[tuple[str, Callable[[], None]]] = []
                if self.counts["rows"] > self.counts["quarantined"]:
                    recorded = features.drop("kafka_timestamp", "topic", "partition", "offset")
                    writes.append(("features", lambda: write_delta(
                        recorded.withColumn("batch_id", F.lit(batch_id).cast("long")),
                        features_stream_path(self.platform, self.uc), mode="append",
                        txn=self._txn(batch_id, "features"))))
                if quarantined:
                    writes.append(("quarantine", lambda: write_delta(
                        _quarantine_rows(bad, batch_id), quarantine_stream_path(self.platform, self.uc),
                        mode="append", txn=self._txn(batch_id, "quarantine"))))
                if self.stream.publish:
                    writes.append(("publish", lambda: self._publish(predictions, bad if quarantined else None)))
                self._run_together(writes)
            finally:
                predictions.unpersist()
        finally:
            cached.unpersist()
        log.info("batch %d: %d scored, %d quarantined (%d repeats), champion v%d, challenger %s (%s), online v%s "
                 "in %.1fs (%s)", batch_id, self.counts.get("rows", 0) - self.counts.get("quarantined", 0),
                 self.counts.get("quarantined", 0), self.counts.get("duplicates", 0), plan.champion_version,
                 plan.challenger_version, plan.mode, plan.online_version, time.monotonic() - started,
                 ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        self._maybe_pause(batch_id)

    def _run_together(self, writes: Sequence[tuple[str, Callable[[], None]]]) -> None:
        """Run the batch's remaining writes (served features, quarantine, Kafka) side by side:
        each is mostly a fixed commit or flush latency, and they read only cached frames. Each
        keeps its own transaction id, so a crash between them replays without duplicates. The
        threads inherit the batch's job description, so listeners still count their jobs."""
        from concurrent.futures import ThreadPoolExecutor

        from pyspark.util import inheritable_thread_target

        def timed(stage: str, write: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                with self._timed(stage):
                    write()
            return inheritable_thread_target(run)

        if len(writes) <= 1:
            for stage, write in writes:
                timed(stage, write)()
            return
        with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="driftline-write") as pool:
            for future in [pool.submit(timed(stage, write)) for stage, write in writes]:
                future.result()

    def _publish(self, predictions: DataFrame, bad: DataFrame | None) -> None:
        """One Kafka write: served predictions to <uc>.predictions and bad records to <uc>.dlq
        (a topic per row), each keyed (predictions by event id), at least once."""
        served = predictions.where(F.col("served")).select(
            F.col("event_id").alias("key"), F.to_json(F.struct(*[F.col(c) for c in predictions.columns])).alias("value"),
            F.lit(self.uc.topic("predictions")).alias("topic"),
        )
        out = served
        if bad is not None:
            # the raw value is cut at DLQ_VALUE_MAX characters (value_truncated, value_bytes say so):
            # a record near Kafka's size limit must not make the DLQ message too large for the
            # producer and stop the query; the whole record stays in quarantine/<uc>_events_stream
            value, long = F.col("value"), F.length(F.col("value")) > F.lit(DLQ_VALUE_MAX)
            dlq_fields = [*[F.col(c) for c in ("key", "reason", "reasons", "topic", "partition", "offset")],
                          F.when(long, F.substring(value, 1, DLQ_VALUE_MAX)).otherwise(value).alias("value"),
                          F.coalesce(long, F.lit(False)).alias("value_truncated"),
                          F.octet_length(value).alias("value_bytes"), F.col("kafka_timestamp")]
            out = served.unionByName(bad.select(
                F.col("key"), F.to_json(F.struct(*dlq_fields)).alias("value"),
                F.lit(self.uc.topic("dlq")).alias("topic"),
            ))
        out.write.format("kafka").options(**self.platform.kafka.client_options("spark")).save()

    def _maybe_pause(self, batch_id: int) -> None:
        """The crash test's hook: ``DRIFTLINE_FAULT_PAUSE_AFTER_WRITE=<batch id>:<marker file>``."""
        hook = os.environ.get(FAULT_PAUSE_ENV)
        if not hook:
            return
        wanted, _, marker = hook.partition(":")
        if int(wanted) == batch_id:
            with open(marker, "w") as fh:
                fh.write(str(batch_id))
            log.warning("fault hook: batch %d written, waiting to be killed", batch_id)
            time.sleep(600)


def _quarantine_rows(bad: DataFrame, batch_id: int) -> DataFrame:
    """Rows of quarantine/<uc>_events_stream: source coordinates, the raw record and why."""
    return bad.select(
        *[F.col(c) for c in ("topic", "partition", "offset", "key", "value", "reason", "reasons", "kafka_timestamp",
                             "ingest_time")],
        F.lit(f"score:{batch_id}").alias("run_id"), F.current_timestamp().alias("quarantined_at"),
    )


# --------------------------------------------------------------------------- the query


def entity_layout(uc: UseCaseConfig) -> StateLayout:
    """What the scoring query keeps: the stream's aggregates (windows up to
    ``streaming.stream_window_max``) over events within the longest of that and
    ``streaming.dedupe_window``, plus ``streaming.allowed_lateness``, in
    ``streaming.state_buckets`` state rows."""
    stream_spec, _ = split_aggregates(feature_spec(uc), uc.streaming.stream_window_max_s)
    numeric = [f.name for f in uc.schema_ if f.type in ("int", "long", "double")]
    s = uc.streaming
    return StateLayout.compile(stream_spec.aggregates, numeric, window_s=max(s.stream_window_max_s, s.dedupe_window_s),
                               lateness_s=s.allowed_lateness_s, buckets=s.state_buckets)


def _bucket(entity: Column, layout: StateLayout) -> Column:
    return F.pmod(F.xxhash64(entity.cast("string")), F.lit(layout.buckets))


def _encoded(column: Callable[[str], Column], uc: UseCaseConfig, layout: StateLayout) -> list[Column]:
    """The arrays the state keeps, from a record's fields (``column(name)``)."""

    def hashed(c: str) -> Column:
        return F.when(column(c).isNull(), F.lit(NULL_HASH)).otherwise(F.xxhash64(column(c)))

    return [
        F.xxhash64(column(uc.entity_key).cast("string")).alias(ENTITY),
        F.coalesce(F.unix_micros(column(uc.event_time)), F.lit(0)).alias(TS),
        F.xxhash64(column(uc.event_id)).alias(ID_HASH),
        *[column(c).cast("double").alias(layout.numeric_name(c)) for c in layout.numeric],
        *[hashed(c).alias(layout.hashed_name(c)) for c in layout.hashed],
    ]


def seed_events(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> DataFrame | None:
    """The history a new checkpoint that starts at the end of the topic (``starting_offsets:
    latest``) fills its state with: silver events within the state's retention of the newest
    one, so the first scored events see their entity's past. None without a silver table."""
    path = catalog.path(platform, "silver_events", uc)
    if latest_version(spark, path) is None:
        return None
    layout = entity_layout(uc)
    events = read_delta(spark, path)
    newest = events.agg(F.max(F.unix_micros(F.col(uc.event_time))).alias("t")).first()
    if newest is None or newest["t"] is None:
        return None
    since = int(newest["t"]) - layout.retention_us
    return events.where(F.unix_micros(F.col(uc.event_time)) >= F.lit(since))


def scoring_stream(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, starting_offsets: str | None = None,
    seed: DataFrame | None = None,
) -> DataFrame:
    """The streaming half of the scoring query: Kafka → parse and check each record once →
    bucketed per-entity state (stream aggregates, repeats) → rows for :class:`BatchScorer`.

    Good and bad records flow through together (bad ones in a bucket of their own,
    untouched), so one micro-batch is one pass. ``seed`` (events with the use case's fields)
    fills the state of a new checkpoint before its first batch.
    """
    from driftline.quality import check_records

    stream = streaming_spec(uc)
    dataset = event_dataset(uc)
    layout = entity_layout(uc)
    raw = raw_records(read_kafka_stream(spark, platform.kafka, uc.topic("events"),
                                        starting_offsets or stream.starting_offsets, stream.max_offsets_per_trigger,
                                        fail_on_data_loss=stream.fail_on_data_loss))
    checked = check_records(raw, dataset)
    entity = F.col("parsed")[uc.entity_key]
    good = F.col("reason").isNull() & entity.isNotNull()
    fields = [f.name for f in dataset.fields]
    keyed = checked.select(
        F.when(good, _bucket(entity, layout)).otherwise(F.lit(BAD_BUCKET)).cast("int").alias(BUCKET),
        *_encoded(lambda c: F.col("parsed")[c], uc, layout),
        F.unix_micros(F.col("kafka_timestamp")).alias(ARRIVAL),
        *[F.col("parsed")[c].alias(c) for c in fields],
        *[F.col(c) for c in ("key", "topic", "partition", "offset", "kafka_timestamp", "ingest_time")],
        F.when(~good, F.col("value")).alias("value"),
        F.col("reason"), F.col("reasons"),
    )
    internal = {BUCKET, ENTITY, TS, ID_HASH, ARRIVAL, *layout.encoded}
    passthrough = [f for f in keyed.schema.fields if f.name not in internal]
    # timestamps cross the pandas bridge as microseconds: pandas' nanoseconds end in 2262,
    # and a far-future (valid or not) event time must never stop the query
    times = {f.name for f in passthrough if isinstance(f.dataType, T.TimestampType)}
    keyed = keyed.select(*[F.unix_micros(F.col(c)).alias(c) if c in times else F.col(c) for c in keyed.columns])
    bridged = [T.StructField(f.name, T.LongType()) if f.name in times else f for f in passthrough]
    out_schema = T.StructType([*bridged, *[T.StructField(a.name, T.DoubleType()) for a in layout.aggregates],
                               T.StructField(STALE, T.BooleanType())])
    processor = BucketFeatures(layout, [f.name for f in out_schema.fields])
    initial = None if seed is None else seed.select(
        _bucket(F.col(uc.entity_key), layout).cast("int").alias(BUCKET), *_encoded(F.col, uc, layout),
    ).groupBy(F.col(BUCKET))
    stateful = keyed.groupBy(F.col(BUCKET)).transformWithStateInPandas(
        processor, out_schema, "Append", "None", initialState=initial)
    counts = {"count", "distinct_count"}
    return stateful.select(
        *[F.timestamp_micros(F.col(f.name)).alias(f.name) if f.name in times else F.col(f.name) for f in passthrough],
        *[F.col(a.name).cast("long" if a.fn in counts else "double").alias(a.name) for a in layout.aggregates],
        F.coalesce(F.col(STALE), F.lit(False)).alias(STALE),
    )


def start_scoring(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, trigger: str | None = None,
    checkpoint: str | None = None, idempotent: bool = True, on_batch: Callable[[int], None] | None = None,
    migrate_from: str | None = None, guard_repeats: bool = True, detect_gaps: bool = True,
) -> StreamingQuery:
    """Start the scoring query of ``uc`` (see the module docstring); returns the running query.

    Example::

        q = start_scoring(spark, platform, load_usecase("fraud"), trigger="availableNow")
        q.awaitTermination()
    """
    from driftline.kafka.clients import ensure_topics

    stream = streaming_spec(uc)
    checkpoint = checkpoint or score_checkpoint(platform, uc)
    files = CheckpointFiles(spark, checkpoint)
    starting = None
    if migrate_from is not None:
        if files.numbers("offsets"):
            raise ConfigError(f"--migrate-from: the new checkpoint {checkpoint} is already in use; name an empty one")
        starting = migration_offsets(spark, platform, uc, migrate_from)
        log.info("scoring %s: taking over from %s at offsets %s", uc.name, migrate_from, starting)
    check_checkpoint(spark, checkpoint)
    check_checkpoint_topic(spark, checkpoint, uc.topic("events"))
    # A deployment that starts at the end of the topic begins with its entities' history;
    # a query that reads the topic from the start builds its state from the topic itself.
    fresh_start = not files.numbers("offsets") and (starting or stream.starting_offsets) == "latest"
    seed = seed_events(spark, platform, uc) if fresh_start else None
    files.write("driftline-layout", QUERY_LAYOUT)
    ensure_topics(platform.kafka, [uc.topic(k) for k in ("events", "predictions", "dlq")])
    scorer = BatchScorer(spark, platform, uc, checkpoint, idempotent=idempotent, guard_repeats=guard_repeats,
                         detect_gaps=detect_gaps)
    scorer.warm_up()

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        scorer(batch, batch_id)
        if on_batch is not None:
            on_batch(batch_id)

    return (
        scoring_stream(spark, platform, uc, starting_offsets=starting, seed=seed).writeStream.foreachBatch(each_batch)
        .queryName(f"score-{uc.name}")
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
        .trigger(**trigger_options(trigger or stream.trigger))  # type: ignore[call-overload]
        .start()
    )
