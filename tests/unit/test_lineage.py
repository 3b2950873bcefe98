"""Commit lineage (driftline.lineage) and Kafka offset ranges (driftline.kafka.spark), without Spark."""

from __future__ import annotations

import json

import pytest

from driftline.config import load_platform, load_usecase
from driftline.kafka.spark import offsets_json
from driftline.lineage import Lineage, table_input


def test_offsets_json() -> None:
    assert offsets_json("fraud.events", "earliest") == "earliest"
    assert json.loads(offsets_json("fraud.events", {1: -2, 0: 10})) == {"fraud.events": {"0": 10, "1": -2}}
    with pytest.raises(ValueError, match="offsets: the partition->offset mapping is empty"):
        offsets_json("fraud.events", {})
    with pytest.raises(ValueError, match="offsets: expected 'earliest'"):
        offsets_json("fraud.events", " ")


def test_lineage_round_trips_and_compares_inputs_extra_and_config() -> None:
    platform, usecase = load_platform(env={}), load_usecase("fraud")
    lineage = Lineage.for_job("validate", platform, usecase, "run-1", [table_input("/lake/bronze/x", 3)], {"k": 1})
    data = json.loads(lineage.to_json())
    assert data["inputs"] == [{"path": "/lake/bronze/x", "version": 3}]
    assert (data["platform_digest"], data["usecase_digest"]) == (platform.digest(), usecase.digest())
    assert data["config_hash"] == lineage.config_hash
    again = Lineage.from_json(lineage.to_json())
    assert again == lineage
    # another run over the same inputs is the same computation; anything else is not
    assert lineage.same_computation(Lineage.for_job("validate", platform, usecase, "run-2",
                                                    [table_input("/lake/bronze/x", 3)], {"k": 1}))
    assert not lineage.same_computation(Lineage.for_job("validate", platform, usecase, "run-2",
                                                        [table_input("/lake/bronze/x", 4)], {"k": 1}))
    assert not lineage.same_computation(Lineage.for_job("validate", platform, usecase, "run-2",
                                                        [table_input("/lake/bronze/x", 3)], {"k": 2}))
    other = usecase.replace(validation={"max_quarantine_rate": 0.5})
    assert not lineage.same_computation(Lineage.for_job("validate", platform, other, "run-2",
                                                        [table_input("/lake/bronze/x", 3)], {"k": 1}))
    assert not lineage.same_computation(None)
