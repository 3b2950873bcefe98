"""Online scoring in Structured Streaming: Kafka events → features → champion,
shadow or canary challenger → Delta (exactly once) and Kafka.

One micro-batch, in order (:class:`BatchScorer`)::

    Kafka <uc>.events ─ dedupe by event id within ``streaming.dedupe_window`` (state in the checkpoint)
      └ foreachBatch(batch, batch_id)
          1. the batch's plan: champion / challenger versions and routing, decided once
             per batch id and kept next to the checkpoint, so a replay reuses it
          2. parse PERMISSIVE with the use case's schema (driftline.quality.classify);
             bad records → quarantine/<uc>_events_stream + <uc>.dlq (reason + topic/partition/offset)
          3. features from the SAME definitions as the batch jobs (driftline.features):
             aggregates over windows up to ``streaming.stream_window_max`` from the stream
             itself (point in time over the batch and the earlier events kept in
             gold/<uc>_features_stream), longer windows and label aggregates from
             gold/<uc>_features_online
          4. champion scores natively (PipelineModel.transform); the challenger in
             shadow (scored, stored, never served) or canary (a stable hash of the entity
             picks ``share`` of entities, served by the challenger)
          5. predictions/<uc> and gold/<uc>_features_stream written with
             txnAppId/txnVersion = (query, batch id): a replayed batch is skipped by Delta
          6. served predictions → <uc>.predictions (at least once; key = event id)

Settings (use-case YAML)::

    streaming:
      trigger: 5 seconds               # or availableNow / once
      dedupe_window: 10 minutes        # a repeat of an event id arriving within this is dropped
      max_offsets_per_trigger: 100000
      starting_offsets: earliest       # | latest, for a new checkpoint
      stream_window_max: 1h            # aggregates over longer windows come from the online table
      publish: true                    # <uc>.predictions and <uc>.dlq
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
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from driftline import catalog
from driftline.catalog import BRONZE_COLUMNS, PREDICTION_SCHEMA
from driftline.config import PlatformConfig, UseCaseConfig, section_error, trigger_options
from driftline.config.sections import RoutingSpec, StreamingSpec
from driftline.delta import read_if_exists, write_delta
from driftline.errors import RegistryError
from driftline.features import (
    FeatureSpec,
    feature_spec,
    point_in_time_features,
    with_ratios,
)
from driftline.kafka.spark import raw_records, read_kafka_stream
from driftline.quality import event_dataset

log = logging.getLogger(__name__)

ROUTES = ("champion", "challenger", "shadow")
MODE_TAG = "driftline.routing.mode"
SHARE_TAG = "driftline.routing.share"
BUCKETS = 10_000
CANARY_SALT = "driftline-canary"
# Test hook: after writing the predictions of this batch id, touch a marker file and wait,
# so a test can kill -9 the driver in the middle of a batch (before Spark commits it).
FAULT_PAUSE_ENV = "DRIFTLINE_FAULT_PAUSE_AFTER_WRITE"


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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchPlan:
        return cls(**json.loads(text))


class PlanLog:
    """One small JSON file per batch id under ``<checkpoint>/driftline-plans`` (any
    Hadoop file system, like the checkpoint itself): written before the batch
    writes anything, read back when Spark replays the batch id."""

    def __init__(self, spark: SparkSession, checkpoint: str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._dir = jvm.org.apache.hadoop.fs.Path(checkpoint.rstrip("/") + "/driftline-plans")
        self._fs = self._dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]

    def _path(self, batch_id: int) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(self._dir, str(batch_id))

    def get(self, batch_id: int) -> BatchPlan | None:
        path = self._path(batch_id)
        if not self._fs.exists(path):
            return None
        stream = self._fs.open(path)
        try:
            return BatchPlan.from_json(str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")))
        finally:
            stream.close()

    def put(self, plan: BatchPlan) -> None:
        out = self._fs.create(self._path(plan.batch_id), True)
        try:
            out.write(bytearray(plan.to_json().encode()))
        finally:
            out.close()


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


def stream_features(
    events: DataFrame, recent: DataFrame | None, online: DataFrame | None, spec: FeatureSpec, window_max_s: int
) -> DataFrame:
    """Features of the batch ``events``, as the batch jobs define them.

    Aggregates over windows up to ``window_max_s``: point in time over ``recent``
    (earlier events of the stream) plus the batch; the others: the entity's row in
    ``online`` (``gold/<uc>_features_online``), 0 for counts and sums of an unknown
    entity. Output: ``id, entity, timestamp, *spec.columns()``.

    Example::

        stream_features(batch, recent, online, feature_spec(uc), 3600)
    """
    stream_spec, table_names = split_aggregates(spec, window_max_s)
    fields = events.columns
    timeline = events
    if recent is not None:
        # the entity's earlier events that any window of this batch can reach
        since = events.groupBy(F.col(spec.entity)).agg(
            (F.min(F.col(spec.timestamp)) - F.expr(f"INTERVAL {window_max_s} SECONDS")).alias("_since"))
        past = (
            recent.select(*[F.col(c) for c in fields])
            .join(F.broadcast(since), spec.entity)
            .where(F.col(spec.timestamp) >= F.col("_since"))
            .drop("_since")
            .join(events.select(F.col(spec.id)), spec.id, "left_anti")  # a replayed batch is already there
        )
        timeline = past.unionByName(events)
    features = point_in_time_features(timeline, stream_spec).join(
        events.select(F.col(spec.id)), spec.id, "left_semi"
    )
    if table_names:
        fns = {a.name: a.fn for a in spec.aggregates}
        if online is None:
            looked_up = features.select("*", *[F.lit(None).cast("double").alias(n) for n in table_names])
        else:
            looked_up = features.join(
                online.select(F.col(spec.entity), *[F.col(n) for n in table_names]), spec.entity, "left"
            )
        fill = [
            (F.coalesce(F.col(n), F.lit(0)) if fns[n] in ("count", "sum", "distinct_count") else F.col(n)).alias(n)
            for n in table_names
        ]
        features = looked_up.select(*[F.col(c) for c in features.columns], *fill)
    extra = [c for c in spec.ratio_fields() if c not in features.columns]
    if extra:
        features = features.join(events.select(F.col(spec.id), *[F.col(c) for c in extra]), spec.id)
    return with_ratios(features, spec.ratios).select(
        F.col(spec.id), F.col(spec.entity), F.col(spec.timestamp), *[F.col(c) for c in spec.columns()]
    )


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
    )


def route_and_score(
    features: DataFrame, plan: BatchPlan, models: dict[int, PipelineModel], uc: UseCaseConfig, threshold: float,
    name: str,
) -> DataFrame:
    """Predictions of one batch under ``plan``: champion served for everything (champion
    mode), plus the challenger unserved (shadow), or the canary entities served by the
    challenger and the rest by the champion (canary)."""
    champ = models[plan.champion_version]
    common = {"name": name}
    if plan.challenger_version is None or plan.mode == "champion":
        return _scored(champ, features, uc, threshold, route="champion", served=True,
                       version=plan.champion_version, **common)
    chall = models[plan.challenger_version]
    if plan.mode == "shadow":
        served = _scored(champ, features, uc, threshold, route="champion", served=True,
                         version=plan.champion_version, **common)
        shadow = _scored(chall, features, uc, threshold, route="shadow", served=False,
                         version=plan.challenger_version, **common)
        return served.unionByName(shadow)
    canary = in_canary(F.col(uc.entity_key), plan.share)
    by_champion = _scored(champ, features.where(~canary), uc, threshold, route="champion", served=True,
                          version=plan.champion_version, **common)
    by_challenger = _scored(chall, features.where(canary), uc, threshold, route="challenger", served=True,
                            version=plan.challenger_version, **common)
    return by_champion.unionByName(by_challenger)


def _publish(df: DataFrame, platform: PlatformConfig, topic: str, key: Column) -> None:
    """Write ``df`` as JSON values to ``topic`` (at least once)."""
    (
        df.select(key.cast("string").alias("key"), F.to_json(F.struct(*[F.col(c) for c in df.columns])).alias("value"))
        .write.format("kafka").options(**platform.kafka.client_options("spark")).option("topic", topic).save()
    )


class BatchScorer:
    """The ``foreachBatch`` function of the scoring query (see the module docstring).

    ``idempotent=False`` drops the Delta transaction ids; it exists so that the
    crash test can show that it catches the duplicates a replay would then write.
    """

    def __init__(self, spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, checkpoint: str, *,
                 idempotent: bool = True) -> None:
        from driftline.registry import model_name
        from driftline.training import model_spec

        self.spark, self.platform, self.uc = spark, platform, uc
        self.stream = streaming_spec(uc)
        self.features = feature_spec(uc)
        self.dataset = event_dataset(uc)
        self.window_max_s = self.stream.stream_window_max_s
        self.threshold = model_spec(uc).threshold
        self.name = model_name(uc)
        self.idempotent = idempotent
        self.app_id = "driftline-score-" + hashlib.sha256(checkpoint.encode()).hexdigest()[:16]
        self.models: dict[int, PipelineModel] = {}
        self.plans = PlanLog(spark, checkpoint)
        self.last_plan: BatchPlan | None = None
        self.timings: dict[str, float] = {}

    # -- plans and models

    def plan(self, batch_id: int) -> BatchPlan:
        """The recorded plan of ``batch_id`` (a replay), else a new one, recorded before use."""
        recorded = self.plans.get(batch_id)
        if recorded is not None:
            log.info("batch %d: replay, scoring with the recorded plan %s", batch_id, recorded)
            return recorded
        plan = decide_plan(self.platform, self.uc, batch_id)
        self.plans.put(plan)
        last = self.last_plan
        if last and dataclasses.replace(last, batch_id=batch_id) != plan:
            log.info("batch %d: models changed: champion v%s -> v%s, challenger %s -> %s (%s %.2f)", batch_id,
                     last.champion_version, plan.champion_version, last.challenger_version,
                     plan.challenger_version, plan.mode, plan.share)
        self.last_plan = plan
        return plan

    def model(self, version: int) -> PipelineModel:
        if version not in self.models:
            import mlflow.spark

            from driftline.registry import client_for

            client_for(self.platform)
            started = time.monotonic()
            self.models[version] = mlflow.spark.load_model(f"models:/{self.name}/{version}")
            log.info("loaded %s v%d in %.1fs", self.name, version, time.monotonic() - started)
        return self.models[version]

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.monotonic() - started

    def _txn(self, batch_id: int, table: str) -> tuple[str, int] | None:
        return (f"{self.app_id}-{table}", batch_id) if self.idempotent else None

    # -- one micro-batch

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from driftline.quality import classify, good_records, quarantined_records

        started = time.monotonic()
        self.timings = {}
        with self._timed("plan"):
            plan = self.plan(batch_id)
        bronze = batch.select(*[F.col(c) for c in BRONZE_COLUMNS])
        classified = classify(bronze, self.dataset).persist()
        try:
            with self._timed("parse"):
                counts = {r["good"]: r["n"] for r in classified.groupBy((F.col("reason").isNull()).alias("good"))
                          .agg(F.count(F.lit(1)).alias("n")).collect()}
            n_good, n_bad = int(counts.get(True, 0)), int(counts.get(False, 0))
            if n_bad:
                with self._timed("quarantine"):
                    self._quarantine(quarantined_records(classified, f"score:{batch_id}", dt.datetime.now(dt.UTC)),
                                     batch_id)
            if n_good:
                events = good_records(classified, self.dataset).drop("topic", "partition", "offset", "ingest_time")
                self._score(events, classified, plan, batch_id)
        finally:
            classified.unpersist()
        log.info("batch %d: %d scored, %d quarantined, champion v%d, challenger %s (%s) in %.1fs (%s)", batch_id,
                 n_good, n_bad, plan.champion_version, plan.challenger_version, plan.mode,
                 time.monotonic() - started, ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        self._maybe_pause(batch_id)

    def _quarantine(self, bad: DataFrame, batch_id: int) -> None:
        bad = bad.persist()
        try:
            write_delta(bad, quarantine_stream_path(self.platform, self.uc), mode="append",
                        txn=self._txn(batch_id, "quarantine"))
            if self.stream.publish:
                dlq = bad.select("key", "reason", "reasons", "topic", "partition", "offset", "value",
                                 "kafka_timestamp")
                _publish(dlq, self.platform, self.uc.topic("dlq"), F.col("key"))
        finally:
            bad.unpersist()

    def _recent(self) -> DataFrame | None:
        return read_if_exists(self.spark, features_stream_path(self.platform, self.uc))

    def _online(self) -> DataFrame | None:
        return read_if_exists(self.spark, catalog.path(self.platform, "features_online", self.uc))

    def _score(self, events: DataFrame, classified: DataFrame, plan: BatchPlan, batch_id: int) -> None:
        events = events.persist()
        try:
            features = stream_features(events, self._recent(), self._online(), self.features, self.window_max_s)
            extra = [c for c in events.columns if c not in features.columns]
            # each event's fields and features: the record of what was served, and the
            # earlier events the windows of later batches read
            features = (
                features.join(events.select(F.col(self.uc.event_id), *[F.col(c) for c in extra]), self.uc.event_id)
                .withColumn("batch_id", F.lit(batch_id).cast("long"))
                .persist()
            )
            with self._timed("features"):
                write_delta(features, features_stream_path(self.platform, self.uc), mode="append",
                            txn=self._txn(batch_id, "features"))
            with self._timed("load_models"):
                models = {v: self.model(v) for v in (plan.champion_version, plan.challenger_version)
                          if v is not None}
            arrival = classified.where(F.col("reason").isNull()).select(
                F.col("parsed")[self.uc.event_id].cast("string").alias("event_id"), F.col("kafka_timestamp"))
            predictions = (
                route_and_score(features, plan, models, self.uc, self.threshold, self.name)
                .withColumn("batch_id", F.lit(batch_id).cast("long"))
                .withColumn("scoring_time", F.current_timestamp())
                .join(arrival, "event_id", "left")
                .select(*[F.col(f.name).cast(f.dataType) for f in PREDICTION_SCHEMA.fields])
            ).persist()
            try:
                with self._timed("score"):
                    write_delta(predictions, predictions_path(self.platform, self.uc), mode="append",
                                txn=self._txn(batch_id, "predictions"))
                if self.stream.publish:
                    with self._timed("publish"):
                        _publish(predictions.where(F.col("served")), self.platform, self.uc.topic("predictions"),
                                 F.col("event_id"))
            finally:
                predictions.unpersist()
                features.unpersist()
        finally:
            events.unpersist()

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


# --------------------------------------------------------------------------- the query


def start_scoring(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, trigger: str | None = None,
    checkpoint: str | None = None, idempotent: bool = True, on_batch: Callable[[int], None] | None = None,
) -> StreamingQuery:
    """Start the scoring query of ``uc`` (see the module docstring); returns the running query.

    Example::

        q = start_scoring(spark, platform, load_usecase("fraud"), trigger="availableNow")
        q.awaitTermination()
    """
    from driftline.kafka.clients import ensure_topics

    stream = streaming_spec(uc)
    checkpoint = checkpoint or score_checkpoint(platform, uc)
    ensure_topics(platform.kafka, [uc.topic(k) for k in ("events", "predictions", "dlq")])
    scorer = BatchScorer(spark, platform, uc, checkpoint, idempotent=idempotent)
    raw = raw_records(read_kafka_stream(spark, platform.kafka, uc.topic("events"), stream.starting_offsets,
                                        stream.max_offsets_per_trigger))
    # A repeat of an event id (or, for a record without one, of its coordinates) that
    # arrives within the dedupe window is dropped; the state lives in the checkpoint.
    key = F.coalesce(F.get_json_object(F.col("value"), f"$.{uc.event_id}"),
                     F.concat_ws("/", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string")))
    deduped = (
        raw.withColumn("_dedupe_key", key)
        .withWatermark("kafka_timestamp", stream.dedupe_window)
        .dropDuplicatesWithinWatermark(["_dedupe_key"])
    )

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        scorer(batch, batch_id)
        if on_batch is not None:
            on_batch(batch_id)

    return (
        deduped.writeStream.foreachBatch(each_batch)
        .queryName(f"score-{uc.name}")
        .option("checkpointLocation", checkpoint)
        .trigger(**trigger_options(trigger or stream.trigger))  # type: ignore[call-overload]
        .start()
    )
