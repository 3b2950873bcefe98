"""The scoring query's configuration and routing rules (pure logic, no Spark job)."""

from __future__ import annotations

import pytest

from driftline.config import load_usecase
from driftline.errors import ConfigError
from driftline.scoring import BatchPlan, RoutingSpec, current_routing, routing_spec, streaming_spec

FRAUD = load_usecase("fraud")


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_shipped_usecases_parse(name: str) -> None:
    uc = load_usecase(name)
    assert streaming_spec(uc).stream_window_max == "1h"
    assert routing_spec(uc) == RoutingSpec(mode="shadow", share=0.05)


@pytest.mark.parametrize(("section", "value", "key"), [
    ("streaming", {"trigger": ""}, "streaming.trigger"),
    ("streaming", {"dedupe_window": "soon"}, "streaming.dedupe_window"),
    ("streaming", {"max_offsets_per_trigger": 0}, "streaming.max_offsets_per_trigger"),
    ("streaming", {"tigger": "5 seconds"}, "streaming.tigger"),
    ("streaming", {"fail_on_data_loss": "sometimes"}, "streaming.fail_on_data_loss"),
    ("routing", {"mode": "canry"}, "routing.mode"),
    ("routing", {"share": 1.5}, "routing.share"),
])
def test_bad_settings_name_the_key(section: str, value: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        uc = FRAUD.replace(**{section: value})
        (streaming_spec if section == "streaming" else routing_spec)(uc)


def test_fail_on_data_loss_is_off_by_default_and_typed() -> None:
    assert streaming_spec(FRAUD).fail_on_data_loss is False  # a retention gap is skipped and alerted
    assert streaming_spec(FRAUD.replace(streaming={"fail_on_data_loss": True})).fail_on_data_loss is True


def test_registry_tags_override_the_yaml_routing() -> None:
    default = RoutingSpec(mode="shadow", share=0.05)
    assert current_routing({}, default) == default
    assert current_routing({"driftline.routing.mode": "canary", "driftline.routing.share": "0.25"}, default) == \
        RoutingSpec(mode="canary", share=0.25)


def test_plan_round_trips_as_json() -> None:
    plan = BatchPlan(12, 3, 4, "canary", 0.25)
    assert BatchPlan.from_json(plan.to_json()) == plan
