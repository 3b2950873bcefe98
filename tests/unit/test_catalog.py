"""The catalog names every table, schema and checkpoint once; the demo's tables are all in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline import catalog
from driftline.config import load_platform
from driftline.demo import DEMO_TABLES
from driftline.errors import ConfigError


def test_every_table_has_a_distinct_location_per_use_case() -> None:
    platform = load_platform(env={})
    paths = [t.path(platform, "fraud") for t in catalog.TABLES.values()]
    assert len(paths) == len(set(paths)), "two catalog entries share a location"
    # two use cases never share a per-use-case table
    fraud = {t.path(platform, "fraud") for t in catalog.TABLES.values() if t.per_usecase}
    eta = {t.path(platform, "eta") for t in catalog.TABLES.values() if t.per_usecase}
    assert not fraud & eta


def test_paths_come_from_layer_and_name_under_the_lake_root(tmp_path: Path) -> None:
    platform = load_platform(env={}, overrides=[f"lake_root={tmp_path}", f"checkpoint_root={tmp_path / 'ck'}"])
    assert catalog.path(platform, "bronze_events", "fraud") == f"{tmp_path}/bronze/fraud_events"
    assert catalog.path(platform, "features_offline", "eta") == f"{tmp_path}/gold/eta_features_offline"
    assert catalog.path(platform, "queries") == f"{tmp_path}/monitoring/queries"
    assert catalog.checkpoint(platform, "score", "fraud") == f"{tmp_path / 'ck'}/score/fraud"
    assert catalog.checkpoint(platform, "monitor", "eta", source="events") == f"{tmp_path / 'ck'}/monitor/eta/events"
    with pytest.raises(ConfigError, match=r"no table 'gold'.*'bronze_events'"):
        catalog.path(platform, "gold", "fraud")
    with pytest.raises(ConfigError, match="belongs to a use case"):
        catalog.path(platform, "predictions")


def test_fixed_schemas_and_keys_agree() -> None:
    for t in catalog.TABLES.values():
        if t.schema is None:
            continue
        names = t.schema.fieldNames()
        assert len(names) == len(set(names)), t.key
        assert set(t.keys) <= set(names), f"{t.key}: keys {t.keys} are not columns"
    assert catalog.TABLES["predictions"].schema is catalog.PREDICTION_SCHEMA
    assert catalog.BRONZE_COLUMNS == ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "ingest_time")


def test_the_demo_summary_and_the_report_list_only_catalogued_tables() -> None:
    listed = set(catalog.usecase_tables("fraud"))
    for key in DEMO_TABLES:
        t = catalog.table(key)
        assert (t.layer, t.table_name("fraud")) in listed
    assert ("monitoring", "queries") in listed
    assert ("monitoring", "fraud_monitor_state_events") in listed


def test_identify_maps_a_location_back_to_its_entry() -> None:
    assert catalog.identify("gold", "fraud_features_online", ["fraud", "eta"]) == ("features_online", "fraud")
    assert catalog.identify("monitoring", "queries", ["fraud"]) == ("queries", None)
    assert catalog.identify("gold", "fraud_scratch", ["fraud"]) is None
    assert catalog.identify("predictions", "sc12ab_batch") == ("predictions_batch", "sc12ab")
    assert catalog.identify("monitoring", "x_monitor_state_events") == ("monitor_state_events", "x")


def test_the_architecture_page_shows_the_catalog_as_it_is() -> None:
    from driftline.config import PROJECT_ROOT

    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    shown = text.split("<!-- catalog:begin -->\n", 1)[1].split("<!-- catalog:end -->", 1)[0]
    assert shown == catalog.markdown(), "docs/architecture.md is stale: paste `python -m driftline.catalog` in"
