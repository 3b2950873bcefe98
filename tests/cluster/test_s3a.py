"""The lake and the checkpoints in an S3-compatible object store, as a user runs it.

An S3 server (moto's server app) listens on loopback and checks every request's
signature against an IAM user it created, so a wrong or missing key fails. It is served
by gunicorn (a dependency of mlflow), not by ``moto_server``'s werkzeug development
server: that one answers the AWS SDK's ``Expect: 100-continue`` uploads in a way the SDK's
async client reads as a final status 100, so every file S3A uploads with
``copyFromLocalFile`` (RocksDB state checkpoints) fails there, and only there. The jobs run
through ``./spark-submit.sh`` with ``DRIFTLINE_LAKE_ROOT=s3a://…`` and
``DRIFTLINE_CHECKPOINT_ROOT=s3a://…``; the credentials and the endpoint are in the
environment only (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``),
path-style access in ``DRIFTLINE_SPARK__CONF``. ingest → validate → build_features → train
→ streaming score (availableNow) on the loans example, then delta-rs reads every table with
the same credentials and nothing may have been written to the local lake.

Reads here go through delta-rs's DataFusion engine (``QueryBuilder``), as
:func:`driftline.delta.arrow_table` does for object stores: a pyarrow dataset over
delta-rs's S3 file system makes the interpreter abort at exit about every other run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, QueryBuilder

from driftline import catalog
from driftline.config import PROJECT_ROOT, load_platform, load_usecase
from driftline.delta import count_local, read_local
from driftline.kafka.broker import EmbeddedBroker, free_port
from driftline.kafka.clients import ensure_topics, make_producer

pytestmark = pytest.mark.slow

SCRIPT = PROJECT_ROOT / "spark-submit.sh"
LOANS = PROJECT_ROOT / "docs" / "examples" / "loans"
BUCKET = "driftline-lake"
N = 300
# bad records among the good ones, with the reason validation gives each
POISON = [
    ("{'application_id': 'bad-1', 'product': 'BNPL: 3×'}", "not_json"),
    ('{"application_id": "bad-2", "product": "BNPL: 3×", "region": "N/A", "income": "lots", "amount": 500.0, '
     '"age": 30, "has_coapplicant": false, "submitted_at": "2024-03-01T10:00:00Z"}', "wrong_type:income"),
    ('{"application_id": "bad-3", "product": "BNPL: 3×", "region": "N/A", "income": 100.0, "amount": 500.0, '
     '"age": 30, "has_coapplicant": false, "submitted_at": "2024-03-01T10:00:00Z", "promo_code": "X"}',
     "unknown_field:promo_code"),
]


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What a user exports: the credentials and the endpoint, nothing in any file."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region}

    def storage_options(self) -> dict[str, str]:
        """The same credentials, given to delta-rs explicitly."""
        return {**self.env(), "AWS_ALLOW_HTTP": "true"}

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the S3 server did not listen on {port} within {timeout_s}s: {log.read_text()[-2000:]}")


MOTO_APP = """\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 on a free loopback port, with request signatures checked against an IAM
    user's key (the first three requests, which create that user, are not checked). One
    gunicorn worker process (moto keeps its state in memory), several threads."""
    import boto3

    home = tmp_path_factory.mktemp("s3")
    (home / "moto_wsgi.py").write_text(MOTO_APP)
    port = free_port()
    log = home / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
               "--no-control-socket", "--chdir", str(home), "moto_wsgi:app"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home)
    try:
        _wait_for_port(port, proc, log)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="driftline")
        iam.put_user_policy(UserName="driftline", PolicyName="lake", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName="driftline")["AccessKey"]
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def read(s3: S3Server, path: str) -> pd.DataFrame:
    """A table at ``s3a://…`` read by delta-rs as ``s3://…`` with the credentials passed in."""
    uri = "s3://" + path.removeprefix("s3a://")
    table = DeltaTable(uri, storage_options=s3.storage_options())
    rows = pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())
    return rows.cast(pa.schema(table.schema().to_arrow())).to_pandas()  # string_view etc. as the table's types


def loans_records(n: int) -> tuple[list[dict], list[dict]]:
    import datetime as dt
    import importlib.util

    spec = importlib.util.spec_from_file_location("loans_data", LOANS / "make_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    events, labels = module.records(n, 3, dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    return events, labels


def test_lake_and_checkpoints_in_s3(s3: S3Server, broker: EmbeddedBroker, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"loans_s3_{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load((LOANS / "loans.yaml").read_text())
    data["name"] = name
    uc_file = tmp_path / f"{name}.yaml"
    uc_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    uc = load_usecase(uc_file)

    # events (poison among them, one sent twice) and labels on the real broker
    events, labels = loans_records(N)
    lines = [json.dumps(e, ensure_ascii=False) for e in events]
    lines = lines[:50] + [text for text, _ in POISON] + lines[50:] + [lines[7]]
    kafka = load_platform(overrides=[f"kafka.bootstrap_servers={broker.bootstrap}"], env={}).kafka
    ensure_topics(kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    producer = make_producer(kafka)
    for line in lines:
        producer.produce(uc.topic("events"), value=line.encode())
    for label in labels:
        producer.produce(uc.topic("labels"), key=label["application_id"].encode(), value=json.dumps(label).encode())
    assert producer.flush(30) == 0

    # the jobs, as a user runs them: settings and credentials in the environment only. The
    # checkout's own .driftline/ is never touched: the base directory is a fresh one.
    home = tmp_path / "home"
    home.mkdir()
    lake, checkpoints = f"s3a://{BUCKET}/{name}/lake", f"s3a://{BUCKET}/{name}/checkpoints"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DRIFTLINE_", "MLFLOW_"))}
    env.update(s3.env())
    env.update({
        "DRIFTLINE_LAKE_ROOT": lake,
        "DRIFTLINE_CHECKPOINT_ROOT": checkpoints,
        "DRIFTLINE_BASE_DIR": str(home),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "DRIFTLINE_MLFLOW__TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "DRIFTLINE_SPARK__CONF": json.dumps({"spark.hadoop.fs.s3a.path.style.access": "true"}),
        "DRIFTLINE_SPARK__UI_ENABLED": "false",
        "DRIFTLINE_SPARK__SHUFFLE_PARTITIONS": "2",
        "SPARK_MASTER": "local[2]",
    })
    jars = ["--set", f"jars_dir={PROJECT_ROOT / '.driftline' / 'jars'}"]
    steps = [("jobs/ingest.py", []), ("jobs/validate.py", []), ("jobs/build_features.py", []), ("jobs/train.py", []),
             ("streaming/score.py", ["--trigger", "availableNow"])]
    seconds = {}
    for file, args in steps:
        start = time.monotonic()
        res = subprocess.run([str(SCRIPT), str(PROJECT_ROOT / file), "--usecase", str(uc_file), *jars, *args],
                             cwd=home, env=env, capture_output=True, text=True, timeout=600)
        seconds[file] = round(time.monotonic() - start)
        (tmp_path / f"{Path(file).stem}.log").write_text(res.stdout + res.stderr)
        assert res.returncode == 0, f"{file} exited with {res.returncode} (log in {tmp_path}):\n{res.stderr[-4000:]}"
        assert s3.secret_key not in res.stdout + res.stderr  # credentials never reach a log
    print(f"spark-submit seconds per step: {seconds}")

    platform = load_platform(overrides=[f"lake_root={lake}", f"checkpoint_root={checkpoints}"], env={})

    def table(key: str) -> pd.DataFrame:
        return read(s3, catalog.path(platform, key, uc))

    good = sorted(e["application_id"] for e in events)
    bronze = table("bronze_events")
    assert sorted(bronze["value"]) == sorted(lines)  # byte for byte
    quarantine = table("quarantine_events")
    assert dict(zip(quarantine["value"], quarantine["reason"], strict=True)) == {
        **{text: reason for text, reason in POISON}, lines[7]: "duplicate"}
    silver = table("silver_events")
    assert len(silver) == len(lines) - len(quarantine) == N
    assert sorted(silver["application_id"]) == good
    assert sorted(table("silver_labels")["application_id"]) == good
    offline = table("features_offline").set_index("application_id").sort_index()
    assert offline.index.tolist() == good  # every event is labelled
    truth = pd.DataFrame(labels).set_index("application_id").sort_index()
    assert offline["defaulted"].tolist() == truth["defaulted"].astype(int).tolist()

    # the streaming query scored every good event once, with the registered champion
    predictions = table("predictions").set_index("event_id").sort_index()
    assert predictions.index.tolist() == good
    assert predictions["score"].between(0, 1).all() and all(math.isfinite(s) for s in predictions["score"])
    assert (predictions["prediction"] == (predictions["score"] >= 0.5).astype(float)).all()
    assert set(predictions["route"]) == {"champion"} and predictions["served"].all()
    assert set(predictions["model_version"]) == {1} and set(predictions["model_name"]) == {f"{name}-model"}
    stream_bad = table("quarantine_events_stream")
    assert sorted(stream_bad["reason"]) == sorted([r for _, r in POISON] + ["duplicate"])

    # the checkpoint is in the bucket: Spark's offsets and commits, driftline's batch plans
    listing = s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{name}/checkpoints/score/{name}/")
    keys = {o["Key"].split(f"/score/{name}/", 1)[1] for page in listing for o in page.get("Contents", [])}
    assert {"offsets/0", "commits/0", "driftline-plans/0"} <= keys, sorted(keys)

    # nothing local: no lake or checkpoints under the base directory, no path mistaken for a local one
    assert not (home / ".driftline" / "lake").exists() and not (home / ".driftline" / "checkpoints").exists()
    assert not [p for p in home.rglob("*") if "s3a:" in p.name or p.name == BUCKET]

    # the library's Spark-free readers take the same credentials from the environment
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    path = catalog.path(platform, "predictions", uc)
    assert count_local(path) == N
    assert sorted(read_local(path, ["event_id"])["event_id"]) == good

    # and the server does check them: a wrong secret is refused
    with pytest.raises(Exception, match="(?i)signature|forbidden|403"):
        DeltaTable("s3://" + path.removeprefix("s3a://"),
                   storage_options={**s3.storage_options(), "AWS_SECRET_ACCESS_KEY": "wrong"})
