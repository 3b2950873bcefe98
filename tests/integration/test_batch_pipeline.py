"""The batch pipeline on a real broker and real Delta tables, for both use cases:
Kafka → jobs/ingest → bronze → jobs/validate → silver + quarantine + report →
jobs/build_features → gold offline + online. Tables are read back with delta-rs,
an independent Delta reader; re-runs must change nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.jobs import EXIT_QUALITY
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.lineage import Lineage
from driftline.pipelines import build_features, ingest, validate
from driftline.simulate import make_generator, write_history

N_EVENTS = 150
N_LABELLED = 120  # labels of the later events have not arrived yet


def isolated(name: str) -> UseCaseConfig:
    """The shipped use case under a unique name: its own topics and tables on the shared broker."""
    return load_usecase(name).model_copy(update={"name": f"{name}_{uuid.uuid4().hex[:6]}"})


def produce(platform: PlatformConfig, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(platform.kafka)
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def table(platform: PlatformConfig, layer: str, name: str) -> pd.DataFrame:
    return DeltaTable(platform.table_path(layer, name)).to_pandas()


def lineage_of(platform: PlatformConfig, layer: str, name: str) -> dict[str, Any]:
    history = DeltaTable(platform.table_path(layer, name)).history(1)
    return json.loads(history[0]["userMetadata"])


def version_of(platform: PlatformConfig, layer: str, name: str) -> int:
    return DeltaTable(platform.table_path(layer, name)).version()


def bad_event(uc: UseCaseConfig, good: dict[str, Any]) -> tuple[list[bytes], list[str]]:
    """Three invalid events built from the schema (no use-case specific code) and their reasons."""
    bounded = next(f for f in uc.schema_ if f.max is not None)
    limit = float(bounded.max or 0)
    too_big_value = limit * 10 if bounded.type == "double" else int(limit) * 10
    too_big = {**good, uc.event_id: "bad-range", bounded.name: too_big_value}
    no_entity = {k: v for k, v in good.items() if k != uc.entity_key} | {uc.event_id: "bad-entity"}
    payloads = [b"{this is not json", json.dumps(too_big).encode(), json.dumps(no_entity).encode()]
    return payloads, ["not_json", f"out_of_range:{bounded.name}", f"missing_required:{uc.entity_key}"]


@pytest.mark.parametrize(("name", "extra"), [("fraud", "new_records"), ("eta", "stricter_limit")])
def test_kafka_to_gold_exact_idempotent_with_lineage(
    spark: SparkSession, platform: PlatformConfig, name: str, extra: str, tmp_path: Path
) -> None:
    uc = isolated(name)
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    gen = make_generator(uc, seed=11, chunk_size=N_EVENTS)
    chunk = gen.next_chunk()
    events = gen.encode_events(chunk)
    labels = gen.encode_labels(chunk)[:N_LABELLED]
    label_keys = gen.label_keys(chunk)[:N_LABELLED]
    good = [json.loads(e) for e in events]
    bad, bad_reasons = bad_event(uc, good[0])
    produce(platform, uc.topic("events"),
            [*zip(gen.event_keys(chunk), events, strict=True), *((None, b) for b in bad), (None, events[0])])
    produce(platform, uc.topic("labels"),
            [*zip(label_keys, labels, strict=True), (None, labels[0]), (None, b"[]")])

    # ---- ingest: every record lands in bronze once, with its coordinates
    assert ingest.run(spark, platform, uc) == {"events": N_EVENTS + 4, "labels": N_LABELLED + 2}
    bronze = table(platform, "bronze", f"{uc.name}_events")
    assert len(bronze) == N_EVENTS + 4 and set(bronze["topic"]) == {uc.topic("events")}
    assert not bronze.duplicated(["partition", "offset"]).any()
    assert sorted(bronze["value"]) == sorted(v.decode() for v in [*events, *bad, events[0]])
    bronze_lineage = lineage_of(platform, "bronze", f"{uc.name}_events")
    assert bronze_lineage["job"] == "ingest" and bronze_lineage["inputs"][0]["topic"] == uc.topic("events")

    # ---- validate: good + quarantined = input, with the right reasons
    reports = validate.run(spark, platform, uc)
    events_report = reports["events"]
    assert (events_report.records_in, events_report.records_good, events_report.records_quarantined) == (
        N_EVENTS + 4, N_EVENTS, 4)
    silver = table(platform, "silver", f"{uc.name}_events")
    assert sorted(silver[uc.event_id]) == sorted(e[uc.event_id] for e in good)
    quarantine = table(platform, "quarantine", f"{uc.name}_events")
    assert sorted(quarantine["reason"]) == sorted([*bad_reasons, "duplicate"])
    assert len(silver) + len(quarantine) == len(bronze)
    merged = quarantine.merge(bronze, on=["topic", "partition", "offset"], how="inner", suffixes=("", "_bronze"))
    assert len(merged) == 4 and (merged["value"] == merged["value_bronze"]).all()
    silver_labels = table(platform, "silver", f"{uc.name}_labels")
    labelled = [json.loads(label)[uc.event_id] for label in labels]
    assert sorted(silver_labels[uc.event_id]) == sorted(labelled)
    assert sorted(table(platform, "quarantine", f"{uc.name}_labels")["reason"]) == ["duplicate", "not_json"]
    quality = table(platform, "monitoring", f"{uc.name}_validation")
    assert sorted(zip(quality["dataset"], quality["records_in"], quality["records_quarantined"], strict=True)) == [
        ("events", N_EVENTS + 4, 4), ("labels", N_LABELLED + 2, 2)]

    # ---- build features: every labelled good event offline, every entity online
    assert build_features.run(spark, platform, uc) == {"offline": True, "online": True}
    offline = table(platform, "gold", f"{uc.name}_features_offline")
    assert sorted(offline[uc.event_id]) == sorted(labelled)
    assert offline[uc.label.field].notna().all()
    online = table(platform, "gold", f"{uc.name}_features_online")
    assert sorted(online[uc.entity_key]) == sorted({e[uc.entity_key] for e in good})
    first_count = next(a for a in load_usecase(name).features.aggregates if a.fn == "count").name
    assert (offline[first_count] >= 0).all() and online[first_count].sum() > 0

    # ---- lineage: each output names the input versions it read and the config hash
    config = Lineage.for_job("x", platform, uc, "r").config_hash
    for layer, stream in (("silver", "events"), ("quarantine", "events"), ("silver", "labels")):
        meta = lineage_of(platform, layer, f"{uc.name}_{stream}")
        assert meta["inputs"] == [{"path": platform.table_path("bronze", f"{uc.name}_{stream}"),
                                   "version": version_of(platform, "bronze", f"{uc.name}_{stream}")}]
        assert meta["config_hash"] == config and meta["usecase_digest"] == uc.digest()
    silver_inputs = [{"path": platform.table_path("silver", f"{uc.name}_{s}"),
                      "version": version_of(platform, "silver", f"{uc.name}_{s}")} for s in ("events", "labels")]
    for gold in ("features_offline", "features_online"):
        meta = lineage_of(platform, "gold", f"{uc.name}_{gold}")
        assert meta["inputs"] == silver_inputs and meta["config_hash"] == config

    # ---- idempotence: running every job again changes nothing
    layers = [("bronze", "events"), ("bronze", "labels"), ("silver", "events"), ("silver", "labels"),
              ("quarantine", "events"), ("gold", "features_offline"), ("gold", "features_online"),
              ("monitoring", "validation")]
    versions = {(lay, t): version_of(platform, lay, f"{uc.name}_{t}") for lay, t in layers}
    snapshot = {(lay, t): table(platform, lay, f"{uc.name}_{t}") for lay, t in layers}
    assert ingest.run(spark, platform, uc) == {"events": 0, "labels": 0}
    assert ingest.run(spark, platform, uc, starting_offsets="earliest") == {"events": 0, "labels": 0}
    assert validate.run(spark, platform, uc) == {"events": None, "labels": None}
    assert build_features.run(spark, platform, uc) == {"offline": False, "online": False}
    for key, before in snapshot.items():
        assert version_of(platform, key[0], f"{uc.name}_{key[1]}") == versions[key], key
        after = table(platform, key[0], f"{uc.name}_{key[1]}")
        pd.testing.assert_frame_equal(_sorted(after), _sorted(before))

    if extra == "new_records":
        _new_records_flow_through(spark, platform, uc, gen, good, labelled)
    else:
        _stricter_limit_fails_the_job(platform, uc, tmp_path, versions[("silver", "events")])


def _new_records_flow_through(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, gen: Any, good: list[dict[str, Any]],
    labelled: list[str],
) -> None:
    """A second batch of records extends every table; the online table is upserted."""
    chunk = gen.next_chunk().head(30)
    produce(platform, uc.topic("events"), list(zip(gen.event_keys(chunk), gen.encode_events(chunk), strict=True)))
    produce(platform, uc.topic("labels"), list(zip(gen.label_keys(chunk), gen.encode_labels(chunk), strict=True)))
    assert ingest.run(spark, platform, uc) == {"events": 30, "labels": 30}
    validate.run(spark, platform, uc)
    assert build_features.run(spark, platform, uc) == {"offline": True, "online": True}
    new = [json.loads(e) for e in gen.encode_events(chunk)]
    ids = sorted(e[uc.event_id] for e in [*good, *new])
    assert sorted(table(platform, "silver", f"{uc.name}_events")[uc.event_id]) == ids
    assert sorted(table(platform, "gold", f"{uc.name}_features_offline")[uc.event_id]) == sorted(
        [*labelled, *(e[uc.event_id] for e in new)])
    online = table(platform, "gold", f"{uc.name}_features_online")
    assert sorted(online[uc.entity_key]) == sorted({e[uc.entity_key] for e in [*good, *new]})
    assert online["as_of"].nunique() == 1  # every entity moved to the newest snapshot
    assert DeltaTable(platform.table_path("gold", f"{uc.name}_features_online")).history(1)[0]["operation"] == "MERGE"


def _stricter_limit_fails_the_job(platform: PlatformConfig, uc: UseCaseConfig, tmp_path: Path, silver: int) -> None:
    """The job's entry point exits with code 3 and names the limit; silver is left as it was."""
    strict = uc.model_dump(mode="json", by_alias=True)
    strict["validation"]["max_quarantine_rate"] = 0.01
    strict_yaml = tmp_path / f"{uc.name}.yaml"
    strict_yaml.write_text(yaml.safe_dump(strict))
    args = ["--usecase", str(strict_yaml), "--set", f"lake_root={platform.lake_root}",
            "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}", "--set", "spark.shuffle_partitions=2",
            "--set", "spark.log_level=ERROR", "--set", "spark.ui_enabled=false"]
    assert validate.main(args) == EXIT_QUALITY
    assert version_of(platform, "silver", f"{uc.name}_events") == silver
    quality = table(platform, "monitoring", f"{uc.name}_validation")
    failed = quality[quality["status"] == "error"]
    assert list(failed["dataset"]) == ["events"]
    assert failed["violations"].iloc[0][0].startswith("validation.max_quarantine_rate = 0.01 exceeded: observed")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    hashable = df.astype({c: str for c in df.columns if df[c].dtype == object})
    return df.loc[hashable.sort_values(list(df.columns)).index].reset_index(drop=True)


def test_ingest_from_simulator_files(spark: SparkSession, platform: PlatformConfig, tmp_path: Path) -> None:
    uc = isolated("eta")
    history = write_history(make_generator(uc, seed=3, events_per_second=1.0, diurnal=False), tmp_path / "sim", 90)
    assert history.events > 50
    added = ingest.run(spark, platform, uc, from_files=str(tmp_path / "sim"))
    assert added == {"events": history.events, "labels": history.labels}
    bronze = table(platform, "bronze", f"{uc.name}_events").sort_values("offset")
    lines = (tmp_path / "sim" / "events.jsonl").read_text().splitlines()
    assert list(bronze["offset"]) == list(range(1, len(lines) + 1))  # 1-based line numbers
    assert list(bronze["value"]) == lines
    assert set(bronze["topic"]) == {f"file:{tmp_path / 'sim' / 'events.jsonl'}"}
    assert ingest.run(spark, platform, uc, from_files=str(tmp_path / "sim")) == {"events": 0, "labels": 0}
    reports = validate.run(spark, platform, uc)
    assert reports["events"] is not None and reports["events"].records_good == history.events


def test_bad_arguments_print_usage_and_exit_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ingest.main(["--from-files", "x"])
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ingest.main(["--usecase", "fraud", "--from-files", "x", "--starting-offsets", "earliest"])
    assert exc.value.code == 2
    assert validate.main(["--usecase", "nope"]) == 2
    assert "usecase: 'nope' is not defined" in capsys.readouterr().err
