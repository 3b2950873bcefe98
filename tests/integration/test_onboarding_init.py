"""Your own data from configuration only: `driftline usecase init` drafts a use case from simulated
samples of the fraud and eta generators, and the batch pipeline trains a useful model on it:
files → ingest → validate → build_features → train (MLflow, registry, gate)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from pyspark.sql import SparkSession

from driftline.cli import main
from driftline.config import PlatformConfig, load_usecase
from driftline.pipelines import build_features, ingest, train, validate
from driftline.simulate import make_generator, write_history


@dataclass(frozen=True)
class Case:
    events: int                          # about this many events in two simulated hours
    options: dict[str, float]            # simulator options
    ids: tuple[str, str, str]            # event id, event time, entity the draft should find
    label: tuple[str, str]               # label field and kind


# fraud at 5% so that the 15% test split holds enough frauds for a stable ROC AUC
CASES = {
    "fraud": Case(4000, {"fraud_rate": 0.05}, ("event_id", "event_time", "customer_id"), ("is_fraud", "binary")),
    "eta": Case(3000, {}, ("order_id", "order_time", "restaurant_id"), ("delivery_minutes", "regression")),
}


def simulated_sample(name: str, out: Path, events: int, options: dict[str, float]) -> int:
    """About ``events`` simulated events (two hours at a flat rate) and their labels as JSON lines in ``out``."""
    gen = make_generator(load_usecase(name), seed=21, start="2024-03-04T09:00:00Z",
                         events_per_second=events / 7200, diurnal=False, overrides=options)
    return write_history(gen, out, 7200).events


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_a_drafted_use_case_trains_a_useful_model(
    spark: SparkSession, mlflow_platform: PlatformConfig, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    sample = tmp_path / "sample"
    n_events = simulated_sample(name, sample, case.events, case.options)
    assert abs(n_events - case.events) < 0.1 * case.events

    yaml_path = tmp_path / f"{name}_draft.yaml"
    res = CliRunner().invoke(main, ["usecase", "init", "--events", str(sample / "events.jsonl"),
                                    "--labels", str(sample / "labels.jsonl"), "--name", f"{name}_draft",
                                    "--output", str(yaml_path)])
    assert res.exit_code == 0, res.output
    uc = load_usecase(yaml_path)
    assert (uc.event_id, uc.event_time, uc.entity_key) == case.ids
    assert (uc.label.field, uc.label.kind) == case.label
    shipped = load_usecase(name)
    # the draft's schema names the generator's fields with the shipped use case's types (int is long here)
    assert {f.name: f.type for f in uc.schema_} == {
        f.name: "long" if f.type == "int" else f.type for f in shipped.schema_}
    for f in shipped.schema_:
        if f.allowed is not None:  # a two-hour sample shows every category the generator draws from
            assert set(uc.field(f.name).allowed or []) <= set(f.allowed)

    # ---- the batch pipeline on the draft, from the sample files
    assert ingest.run(spark, mlflow_platform, uc, from_files=str(sample)) == {"events": n_events,
                                                                               "labels": n_events}
    reports = validate.run(spark, mlflow_platform, uc)
    events_report, labels_report = reports["events"], reports["labels"]
    assert events_report is not None and labels_report is not None
    # the draft accepts every record of the sample it was drafted from
    assert (events_report.records_good, events_report.records_quarantined) == (n_events, 0)
    assert (labels_report.records_good, labels_report.records_quarantined) == (n_events, 0)
    written = build_features.run(spark, mlflow_platform, uc)
    assert written["offline"] is True

    outcome = train.run(spark, mlflow_platform, uc)
    assert outcome.version == 1 and outcome.gate is not None and outcome.gate.passed
    test_rows = outcome.metrics["rows"]
    assert abs(test_rows - 0.15 * n_events) <= 0.02 * n_events
    if uc.label.kind == "binary":
        assert outcome.metrics["roc_auc"] > 0.8, outcome.metrics
    else:
        labels = pd.read_json(sample / "labels.jsonl", lines=True)[uc.label.field]
        rmse = outcome.metrics["rmse"]
        assert math.isfinite(rmse) and rmse < 0.8 * float(labels.std()), (rmse, float(labels.std()))
