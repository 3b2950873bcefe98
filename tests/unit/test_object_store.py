"""Object-store lakes without a store: credentials stay out of the configuration, the S3A
jars reach Spark when bin/fetch-jars resolved them, delta-rs gets what the environment
does not say. tests/cluster/test_s3a.py runs the platform against an S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import load_platform
from driftline.delta import storage_options
from driftline.errors import ConfigError, SetupError
from driftline.session import spark_jars


@pytest.mark.parametrize("key", [
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.session.token",
    "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net",
    "spark.hadoop.fs.azure.account.oauth2.client.secret",
    "spark.hadoop.fs.azure.sas.fixed.token",
])
def test_a_credential_in_spark_conf_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_platform(overrides=[f'spark.conf={{"{key}": "hunter2-secret"}}'], env={})
    message = str(err.value)
    assert f"spark.conf: '{key}' holds a credential" in message and "environment" in message
    assert "hunter2" not in message


def test_a_credential_may_name_an_environment_variable_and_other_settings_pass() -> None:
    conf = {
        "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net": "${env.AZURE_STORAGE_KEY}",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.delegation.token.binding": "",  # names a class, not a secret
    }
    env = {"DRIFTLINE_SPARK__CONF": str(conf)}
    assert load_platform(env=env).spark.conf == conf


def test_s3_and_abfss_lake_roots_are_used_as_given() -> None:
    platform = load_platform(overrides=["lake_root=s3a://bucket/lake/", "checkpoint_root=abfss://c@a.dfs.core.windows.net/cp"],
                             env={})
    assert platform.table_path("bronze", "fraud_events") == "s3a://bucket/lake/bronze/fraud_events"
    assert platform.checkpoint("score/fraud") == "abfss://c@a.dfs.core.windows.net/cp/score/fraud"


def test_delta_rs_options_only_allow_a_plain_http_endpoint() -> None:
    local = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_SECRET_ACCESS_KEY": "s"}
    assert storage_options("s3a://b/lake/t", local) == {"AWS_ALLOW_HTTP": "true"}
    assert storage_options("s3://b/lake/t", local) == {"AWS_ALLOW_HTTP": "true"}
    assert storage_options("s3a://b/lake/t", {"AWS_ENDPOINT_URL": "https://minio.example:9000"}) == {}
    assert storage_options("s3a://b/lake/t", {}) == {}
    assert storage_options("/data/lake/t", local) == {}
    assert storage_options("abfss://c@a.dfs.core.windows.net/t", local) == {}


def _jars(root: Path, *dirs: tuple[str, list[str]]) -> None:
    for name, jars in dirs:
        (root / name).mkdir(parents=True, exist_ok=True)
        for jar in jars:
            (root / name / jar).write_bytes(b"")


SPARK = ("spark", ["delta-spark_4.2_2.13-4.4.0.jar", "spark-sql-kafka-0-10_2.13-4.2.0.jar"])


def test_spark_jars_add_the_s3a_connector_when_it_was_resolved(tmp_path: Path) -> None:
    _jars(tmp_path, SPARK)
    platform = load_platform(overrides=[f"jars_dir={tmp_path}"], env={})
    assert [Path(j).name for j in spark_jars(platform)] == SPARK[1]
    _jars(tmp_path, ("object-store", ["hadoop-aws-3.5.0.jar", "s3-2.35.4.jar"]))
    assert [Path(j).name for j in spark_jars(platform)] == [*SPARK[1], "hadoop-aws-3.5.0.jar", "s3-2.35.4.jar"]


def test_an_s3a_lake_without_the_connector_says_to_run_setup(tmp_path: Path) -> None:
    _jars(tmp_path, SPARK)
    platform = load_platform(overrides=[f"jars_dir={tmp_path}", "checkpoint_root=s3a://bucket/cp"], env={})
    with pytest.raises(SetupError, match=r"s3a://bucket/cp needs the S3A connector \(hadoop-aws\).*make setup"):
        spark_jars(platform)
