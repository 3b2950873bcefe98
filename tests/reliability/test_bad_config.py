"""Issue 14, item 13: bad configuration and usage, run as a user runs it
(``./spark-submit.sh jobs/X.py ...`` as a subprocess). Each mistake stops the job at
once with exit code 2 and one line naming the thing and what to do, with no traceback,
and leaves nothing half-written: no Delta table directory, no checkpoint file.

"At once": a job started through spark-submit pays the JVM's and Python's start-up
before it reads its configuration; the unknown use case (which fails on its first
line of configuration) measures that, and the checks that talk to the network
(an unreachable broker, an MLflow server that does not answer) must add no more
than their few seconds of timeout to it, where they used to wait a minute or more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from rel_support import (
    FRAUD,
    Submitted,
    files_under,
    platform_args,
    register_champion,
    small_usecase,
    submit,
    write_usecase,
)

from driftline import catalog
from driftline.config import PlatformConfig
from driftline.errors import ConfigError
from driftline.preflight import BROKER_TIMEOUT_S, TRACKING_TIMEOUT_S, check_tracking
from driftline.produce import produce_usecase
from driftline.scoring import start_scoring

SLACK_S = 30.0  # start-up noise on a shared 2-core machine


def assert_refused(res: Submitted, *needles: str) -> None:
    """Exit code 2, one error line naming the problem (every needle), no traceback. (spark-submit
    runs the Python driver with its stderr merged into stdout, so both are read.)"""
    out = res.stdout + res.stderr
    assert res.returncode == 2, (res.returncode, out[-3000:])
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if re.match(r"^\w+: error: ", line)]
    assert len(errors) == 1, out[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def assert_nothing_written(platform: PlatformConfig) -> None:
    assert files_under(platform.lake_root) == {}
    assert files_under(platform.checkpoint_root) == {}


@pytest.fixture(scope="module")
def startup_s(base_platform: PlatformConfig, tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long spark-submit takes to start a job that fails on its first line of
    configuration (an unknown use case); asserts that refusal too."""
    root = tmp_path_factory.mktemp("unknown")
    res = submit("jobs/ingest.py", "--usecase", "no_such_usecase", "--set", f"lake_root={root / 'lake'}",
                 "--set", f"checkpoint_root={root / 'cp'}")
    assert_refused(res, "usecase: 'no_such_usecase' is not defined", "conf/usecases/<name>.yaml",
                   "driftline usecase init")
    assert files_under(root) == {}
    return res.seconds


def test_an_unknown_usecase_is_refused(startup_s: float) -> None:
    assert startup_s < 120


def test_training_before_any_features_names_the_table_and_the_job_to_run(platform: PlatformConfig) -> None:
    res = submit("jobs/train.py", "--usecase", "fraud", *platform_args(platform))
    assert_refused(res, catalog.path(platform, "features_offline", FRAUD),
                   "is not a Delta table", "run the feature job first")
    assert_nothing_written(platform)


@pytest.mark.parametrize("job", ["jobs/ingest.py", "streaming/score.py"])
def test_an_unreachable_broker_fails_within_seconds(platform: PlatformConfig, startup_s: float, job: str) -> None:
    args = [*platform_args(platform), "--set", "kafka.bootstrap_servers=127.0.0.1:1"]
    res = submit(job, "--usecase", "fraud", *args)
    assert_refused(res, "cannot reach Kafka at 127.0.0.1:1", "kafka.bootstrap_servers")
    assert res.seconds < startup_s + BROKER_TIMEOUT_S + SLACK_S, (res.seconds, startup_s)
    assert_nothing_written(platform)


def test_an_mlflow_server_that_does_not_answer_fails_within_seconds(platform: PlatformConfig, startup_s: float
                                                                    ) -> None:
    args = [*platform_args(platform), "--set", "mlflow.tracking_uri=http://127.0.0.1:1"]
    res = submit("streaming/score.py", "--usecase", "fraud", "--trigger", "availableNow", *args)
    assert_refused(res, "mlflow.tracking_uri", "http://127.0.0.1:1", "no MLflow server answers")
    assert res.seconds < startup_s + TRACKING_TIMEOUT_S + SLACK_S, (res.seconds, startup_s)
    assert_nothing_written(platform)


@pytest.mark.parametrize("uri", ["mlflow-server:5000", "htp://mlflow:5000"])
def test_a_tracking_uri_without_a_known_scheme_is_refused(base_platform: PlatformConfig, uri: str) -> None:
    data = base_platform.model_dump(mode="json")
    data["mlflow"]["tracking_uri"] = uri
    with pytest.raises(ConfigError, match=r"mlflow\.tracking_uri: got .* whose scheme"):
        check_tracking(PlatformConfig.model_validate(data))


def test_a_checkpoint_of_another_usecase_is_refused_and_left_as_it_was(
    spark: SparkSession, platform: PlatformConfig, champion_run: str, tmp_path: Path
) -> None:
    first, other = small_usecase(), small_usecase()
    register_champion(spark, platform, first, champion_run)
    assert produce_usecase(platform, first, events=100, seed=51, labels=False).acked == 100
    checkpoint = tmp_path / "cp-first"
    query = start_scoring(spark, platform, first, trigger="availableNow", checkpoint=str(checkpoint))
    query.awaitTermination(600)
    assert query.exception() is None
    before = files_under(checkpoint)
    assert any(name.startswith("commits/") for name in before)

    uc_file = write_usecase(other, tmp_path / "other.yaml")
    res = submit("streaming/score.py", "--usecase", str(uc_file), "--checkpoint", str(checkpoint),
                 "--trigger", "availableNow", *platform_args(platform))
    assert_refused(res, f"checkpoint {checkpoint}", f"reading {first.topic('events')}, not {other.topic('events')}",
                   "--checkpoint")
    assert files_under(checkpoint) == before
    for name in ("predictions", "features_stream", "quarantine_events_stream"):
        assert not Path(catalog.path(platform, name, other)).exists()
