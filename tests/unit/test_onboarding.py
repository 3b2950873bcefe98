"""``driftline usecase init`` infers a use case from samples; ``driftline usecase check`` compiles
every stage of one on empty frames and reports every problem at once, each naming its key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pyspark.sql import SparkSession

from driftline.cli import main
from driftline.config import PlatformConfig, UseCaseConfig, default_conf_dir
from driftline.errors import UsageError
from driftline.onboarding import (
    CheckReport,
    _Collector,
    check_usecase_file,
    draft_usecase,
    profile_fields,
    read_jsonl,
)

T0 = "2024-03-01T08:00:00Z"


def at(minute: int) -> str:
    return f"2024-03-01T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"


def events_sample() -> list[dict[str, Any]]:
    """Twelve events of four accounts: every type, a field missing once, categories with spaces and symbols."""
    kinds = ["fast food", "a: b", "#1", "yes"]
    rows = []
    for i in range(12):
        row: dict[str, Any] = {
            "txn_id": f"t{i:03d}",
            "account_id": f"acc{i % 4}",
            "kind": kinds[i % 4],
            "items": i + 1,
            "price": [-10.0, 0.0, 10.0, 20.0, 30.0, 5.0][i % 6],
            "express": i % 3 == 0,
            "created": at(i),
            "note": f"free text {i}",
        }
        if i != 5:
            row["coupon"] = ["none", "spring"][i % 2]
        rows.append(row)
    return rows


def labels_sample(values: list[Any]) -> list[dict[str, Any]]:
    return [{"txn_id": f"t{i:03d}", "outcome": v, "known_at": at(i + 30)} for i, v in enumerate(values)]


# --------------------------------------------------------------------------- inference


def test_field_types_required_and_allowed_values_are_inferred() -> None:
    fields = {f.name: f for f in profile_fields(events_sample())}
    assert {n: f.type for n, f in fields.items()} == {
        "txn_id": "string", "account_id": "string", "kind": "string", "items": "long", "price": "double",
        "express": "boolean", "created": "timestamp", "note": "string", "coupon": "string",
    }
    assert {n for n, f in fields.items() if f.required} == set(fields) - {"coupon"}
    assert fields["kind"].allowed() == ["#1", "a: b", "fast food", "yes"]
    assert fields["coupon"].allowed() == ["none", "spring"]
    # identifiers and free text never get an allowed list; numbers never do
    assert [fields[n].allowed() for n in ("txn_id", "account_id", "note", "items")] == [None] * 4


def test_ranges_come_from_widened_quantiles_and_stay_non_negative() -> None:
    fields = {f.name: f for f in profile_fields(events_sample())}
    # items 1..12: quantiles 1.011 / 11.989, widened by their span (11.989) and rounded outwards
    assert fields["items"].bounds() == (0.0, 24.0)
    # price -10..30 (each value twice): quantiles -10 / 30, widened by their span (40) on each side
    assert fields["price"].bounds() == (-50.0, 70.0)
    assert fields["txn_id"].bounds() is None and fields["express"].bounds() is None


def test_a_mostly_typed_field_keeps_its_type_and_the_rest_is_named_for_review() -> None:
    rows = [{"id": f"e{i}", "t": at(i % 60), "n": i} for i in range(200)]
    rows[7]["n"] = "oops"
    (n,) = [f for f in profile_fields(rows) if f.name == "n"]
    assert (n.type, n.off_type, n.present) == ("long", 1, 200)
    draft = draft_usecase(rows, None, "typed")
    assert "schema: 1 of 200 values of n are not long; those records will be quarantined as wrong_type" in draft.review


def test_draft_round_trips_through_yaml_and_loads(tmp_path: Path) -> None:
    draft = draft_usecase(events_sample(), labels_sample([1, 0] * 6), "shop")
    assert yaml.safe_load(draft.text) == draft.data
    uc = UseCaseConfig.parse(yaml.safe_load(draft.text))
    assert (uc.event_id, uc.event_time, uc.entity_key) == ("txn_id", "created", "account_id")
    assert (uc.label.field, uc.label.kind, uc.validation.labels.time_field) == ("outcome", "binary", "known_at")
    assert uc.label.delay_s == 1800.0
    assert [f.name for f in uc.schema_] == ["txn_id", "account_id", "kind", "items", "price", "express", "note",
                                           "coupon", "created"]
    assert uc.field("kind").allowed == ["#1", "a: b", "fast food", "yes"]
    assert (uc.field("items").min, uc.field("items").max) == (0, 24)
    assert uc.field("coupon").required is False and uc.validation.max_missing_rate == {"coupon": 0.22}
    assert uc.features.numeric == ["items", "price"]
    assert uc.features.categorical == ["kind", "express", "coupon"]
    assert [(a.name, a.fn, a.column, a.window) for a in uc.features.aggregates] == [
        ("events_1h", "count", None, "1h"), ("events_24h", "count", None, "24h"),
        ("items_mean_24h", "mean", "items", "24h"), ("price_mean_24h", "mean", "price", "24h")]
    assert [(r.name, r.numerator, r.denominator) for r in uc.features.ratios] == [
        ("items_to_mean_24h", "items", "items_mean_24h"), ("price_to_mean_24h", "price", "price_mean_24h")]
    assert uc.model is not None and uc.model.estimator == "logistic_regression"
    assert uc.model.numeric == ["items", "price", "hour_of_day", "is_night", "events_1h", "events_24h",
                                "items_mean_24h", "price_mean_24h", "items_to_mean_24h", "price_to_mean_24h"]
    assert uc.model.categorical == ["kind", "express", "coupon"]
    assert any("note" in line and "not features" in line for line in draft.review)


def test_without_repeats_the_entity_is_the_event_itself_and_nothing_is_aggregated() -> None:
    rows = [{"order_id": f"o{i}", "at": at(i), "weight": 1.5 * i, "paid": i % 2 == 0} for i in range(10)]
    draft = draft_usecase(rows, [{"order_id": f"o{i}", "minutes": 20.0 + i, "done": at(i + 40)}
                                 for i in range(10)], "parcels")
    uc = UseCaseConfig.parse(draft.data)
    assert uc.entity_key == uc.event_id == "order_id"
    assert uc.features.entity == "order_id" and uc.features.aggregates == [] and uc.features.ratios == []
    assert (uc.label.field, uc.label.kind) == ("minutes", "regression")
    assert uc.model is not None and uc.model.estimator == "linear_regression"
    assert uc.model.search.metric == "rmse" and uc.model.gate.metric == "rmse"
    assert uc.field("paid").type == "boolean" and uc.features.categorical == ["paid"]
    assert any(line.startswith("entity_key: no field repeats") for line in draft.review)


@pytest.mark.parametrize(("values", "kind"), [
    ([True, False] * 6, "binary"), ([0, 1] * 6, "binary"), (["true", "false"] * 6, "binary"),
    ([0.0, 1.0] * 6, "binary"), ([12.5, 3.0] * 6, "regression"), ([0, 1, 2] * 4, "regression"),
])
def test_label_kind_from_the_label_values(values: list[Any], kind: str) -> None:
    assert draft_usecase(events_sample(), labels_sample(values), "k").data["label"]["kind"] == kind


def test_samples_without_an_id_or_a_zoned_time_are_refused_with_the_reason() -> None:
    with pytest.raises(UsageError, match="no field has a different value in"):
        draft_usecase([{"k": "a", "t": T0}, {"k": "a", "t": T0}], None, "x")
    with pytest.raises(UsageError, match=r"no field holds ISO 8601 times with a zone .*\['t'\] look like times"):
        draft_usecase([{"id": "a", "t": "2024-03-01 08:00:00"}, {"id": "b", "t": "2024-03-01 08:01:00"}], None, "x")
    with pytest.raises(UsageError, match=r"label values \['bad', 'good'\] are neither"):
        draft_usecase(events_sample(), labels_sample(["good", "bad"] * 6), "x")


def test_read_jsonl_counts_lines_that_are_not_objects(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"a": 2}\n{"a": 3}\n')
    sample = read_jsonl(path, limit=2)
    assert sample.records == [{"a": 1}, {"a": 2}] and sample.skipped == 2


# --------------------------------------------------------------------------- check


def fraud_yaml(tmp_path: Path, change: Callable[[dict[str, Any]], None], name: str = "variant.yaml") -> Path:
    data = yaml.safe_load((default_conf_dir() / "usecases" / "fraud.yaml").read_text())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check(path: Path, spark: SparkSession, platform: PlatformConfig) -> CheckReport:
    return check_usecase_file(path, platform=platform, session=lambda: spark)


def unknown_model_feature(d: dict[str, Any]) -> None:
    d["model"]["numeric"].append("txn_count_2h")


def numeric_as_category(d: dict[str, Any]) -> None:
    d["model"]["numeric"].remove("amount")
    d["model"]["categorical"].append("amount")


def aggregate_of_unknown_column(d: dict[str, Any]) -> None:
    d["features"]["aggregates"].append({"name": "tip_sum_1h", "fn": "sum", "column": "tip", "window": "1h"})


def ratio_of_unknown_denominator(d: dict[str, Any]) -> None:
    d["features"]["ratios"].append({"name": "amount_to_x", "numerator": "amount", "denominator": "amount_mean_3d"})


def drift_feature_not_a_field(d: dict[str, Any]) -> None:
    d["drift"]["features"] = ["amount", "shoe_size"]


def binary_label_with_regressor(d: dict[str, Any]) -> None:
    d["model"]["estimator"] = "gbt_regressor"


def label_is_an_event_field(d: dict[str, Any]) -> None:
    d["label"]["field"] = "amount"


BROKEN = [
    (unknown_model_feature, "model.numeric[14]",
     "'txn_count_2h' is not produced by any feature definition; define it under features (numeric, categorical, "
     "aggregates, ratios, time_of_day) or remove it; did you mean 'txn_count_24h' or 'txn_count_1h' or "
     "'txn_count_10m'?"),
    (numeric_as_category, "model.categorical[5]",
     "'amount' is a numeric feature (features.numeric): one-hot encoding would make every distinct value a "
     "category of its own; move it to model.numeric, or list the field under features.categorical if its "
     "numbers are codes"),
    (aggregate_of_unknown_column, "features.aggregates[9].column",
     "'tip' is not a suitable field for sum; expected one of ['amount']"),
    (ratio_of_unknown_denominator, "features.ratios[2].denominator",
     "'amount_mean_3d' is neither a numeric field nor an earlier numeric feature"),
    (drift_feature_not_a_field, "drift.features[1]",
     "'shoe_size' is not an event field: the monitor compares event fields with the training profile; expected "
     "some of ['event_id', 'customer_id', 'merchant_id', 'merchant_category', 'amount', 'currency', 'country', "
     "'channel', 'device', 'event_time'], or null for every profiled field"),
    (binary_label_with_regressor, "model.estimator",
     "got 'gbt_regressor', but label.kind is 'binary': expected one of ['gbt', 'logistic_regression', "
     "'random_forest']"),
    (label_is_an_event_field, "label.field",
     "'amount' is also an event field (schema): the label must arrive only on fraud.labels, or it leaks into the "
     "features and collides with the event field in the training set; rename the label field or remove the "
     "event field"),
]


@pytest.mark.parametrize(("change", "key", "message"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_each_broken_combination_is_named_by_its_key(
    spark: SparkSession, base_platform: PlatformConfig, tmp_path: Path, change: Callable[[dict[str, Any]], None],
    key: str, message: str,
) -> None:
    report = check(fraud_yaml(tmp_path, change), spark, base_platform)
    assert not report.ok
    found = {(p.key, p.message) for p in report.problems}
    assert (key, message) in found
    if change is label_is_an_event_field:
        # the labels aggregate of fraud.yaml reads the old label's name, the model reads amount: reported too
        assert {p.key for p in report.problems} == {"label.field", "features.aggregates[8].column", "model.numeric[0]"}
    else:
        assert len(found) == 1, found


def test_several_broken_keys_are_all_reported_at_once(tmp_path: Path, spark: SparkSession) -> None:
    def everything(d: dict[str, Any]) -> None:
        for change, *_ in BROKEN:
            if change not in (label_is_an_event_field, binary_label_with_regressor):
                change(d)
        d["drift"]["window"] = "soon"

    path = fraud_yaml(tmp_path, everything)
    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"usecase fraud ({path}): 6 problems in ")
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "features.aggregates[9].column", "features.ratios[2].denominator", "model.numeric[13]",
        "model.categorical[5]", "drift.window", "drift.features[1]"]
    assert "drift.window: got 'soon', expected a duration such as 30s, 1m or 1h" in res.output


def test_the_estimator_is_compiled_with_its_parameters(
    tmp_path: Path, spark: SparkSession, base_platform: PlatformConfig
) -> None:
    def typo(d: dict[str, Any]) -> None:
        d["model"]["estimator_params"] = {"maxIterations": 50}

    report = check(fraud_yaml(tmp_path, typo), spark, base_platform)
    assert [(p.stage, str(p)) for p in report.problems] == [
        ("model", "model.estimator_params.maxIterations: LogisticRegression has no parameter 'maxIterations'")]


def test_a_section_that_does_not_validate_lists_every_error_without_a_traceback(tmp_path: Path) -> None:
    def invalid(d: dict[str, Any]) -> None:
        d["schema"][4]["type"] = "float"
        d["model"]["threshold"] = 2
        d["streaming"]["stat_buckets"] = 8

    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", str(fraud_yaml(tmp_path, invalid))])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.splitlines()[1:] == [
        "  schema.4.type: got 'float', expected: Input should be 'string', 'int', 'long', 'double', 'boolean' or "
        "'timestamp'",
        "  model.threshold: got 2, expected: Input should be less than 1",
        "  streaming.stat_buckets: unknown key (value 8); check the spelling",
    ]


def test_an_unknown_name_or_bad_yaml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", "no_such_usecase"])
    assert res.exit_code == 2
    assert "usecase: 'no_such_usecase' is not defined: expected one of" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", str(bad)])
    assert res.exit_code == 2 and f"{bad}: not valid YAML" in res.output


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_the_shipped_use_cases_pass(spark: SparkSession, name: str) -> None:
    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", name])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"usecase {name}: ok — ") and res.output.endswith(" checks\n")
    assert int(res.output.split("—")[1].split()[0]) >= 15


def test_a_plan_that_does_not_compile_is_a_problem_of_its_stage(spark: SparkSession) -> None:
    c = _Collector()
    assert c.compile("features", "online table plan", lambda: spark.range(1).select("nope").schema) is None
    (problem,) = c.problems
    assert (problem.stage, problem.key, c.checks) == ("features", "features", 1)
    assert problem.message.startswith("the online table plan does not compile although the section passes its "
                                      "checks: AnalysisException: [UNRESOLVED_COLUMN")


def test_a_draft_passes_the_check(tmp_path: Path, spark: SparkSession) -> None:
    events, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in events_sample()))
    labels.write_text("".join(json.dumps(r) + "\n" for r in labels_sample([True, False] * 6)))
    out = tmp_path / "shop.yaml"
    res = CliRunner().invoke(main, ["usecase", "init", "--events", str(events), "--labels", str(labels),
                                    "--name", "shop", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert f"drafted {out} from 12 events and 12 labels" in res.output
    assert "  entity_key: account_id (4 values over 12 events)" in res.output
    res = CliRunner().invoke(main, ["usecase", "check", "--usecase", str(out)])
    assert res.exit_code == 0, res.output
    # an existing file is kept unless --force
    res = CliRunner().invoke(main, ["usecase", "init", "--events", str(events), "--output", str(out)])
    assert res.exit_code == 2 and "exists; pass --force to overwrite it" in res.output
