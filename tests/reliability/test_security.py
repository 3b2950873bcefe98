"""Issue 14, item 12: security. A second embedded broker whose only client listener is
SASL_SSL (SCRAM-SHA-512), with a CA, keystore and truststore this module generates
(openssl, keytool) and SCRAM users created when its storage is formatted; an MLflow
server with basic authentication (``mlflow server --app-name basic-auth``, the auth
settings of ``conf/mlflow/basic_auth.ini`` on a temporary SQLite user store).

- the project's client factories, Spark's Kafka source (:mod:`driftline.kafka.spark`) and
  topic administration connect with the credentials from the environment variables
  ``kafka.security`` names; the same clients with a wrong password are refused with an
  authentication error, within seconds;
- a plaintext client, and a TLS client without SASL, are refused; the broker listens on
  the SASL_SSL port and its loopback controller port only;
- no secret is in the broker's logs, the driver's logs (captured at INFO while Spark reads
  over SASL_SSL), a Spark event log of that read, the SparkConf or the query plan, and
  Spark's redaction (``spark.redaction.regex``) hides the Kafka JAAS setting;
- the MLflow server refuses anonymous calls (401) and a wrong password; the project's client
  (:func:`driftline.registry.client_for`) works with ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD``, and the params the project logs hold no secret.

One broker and one MLflow server for the module; the MLflow server starts first, in the
background, so its start-up overlaps the broker's."""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from pyspark.sql import SparkSession
from rel_support import FRAUD

from driftline.config import PROJECT_ROOT, PlatformConfig
from driftline.config.platform import KafkaSecurity
from driftline.errors import BrokerError
from driftline.kafka.broker import BrokerSecurity, EmbeddedBroker, free_port
from driftline.kafka.clients import ensure_topics, make_consumer, make_producer
from driftline.kafka.spark import kafka_watermarks, read_kafka_batch
from driftline.preflight import check_tracking
from driftline.registry import client_for
from driftline.session import REDACTION_REGEX
from driftline.tracking import DataRef, lineage_params, spec_params
from driftline.training import model_spec

USER_ENV = KafkaSecurity().sasl_username_env  # DRIFTLINE_KAFKA_USERNAME
PASSWORD_ENV = KafkaSecurity().sasl_password_env  # DRIFTLINE_KAFKA_PASSWORD
CLIENT_USER = "driftline-app"
# hex: SCRAM's name=...,password=... syntax and the JAAS line need no escaping
CLIENT_PASSWORD = secrets.token_hex(16)
BROKER_PASSWORD = secrets.token_hex(16)
STORE_PASSWORD = secrets.token_hex(16)
MLFLOW_ADMIN = "driftline-admin"
MLFLOW_PASSWORD = secrets.token_hex(16)  # MLflow wants at least 12 characters
FLASK_SECRET = secrets.token_hex(16)
SECRETS = {"kafka client password": CLIENT_PASSWORD, "kafka broker password": BROKER_PASSWORD,
           "keystore password": STORE_PASSWORD, "mlflow admin password": MLFLOW_PASSWORD,
           "flask secret key": FLASK_SECRET}
N_RECORDS = 24
REFUSAL_TIMEOUT_S = 20.0


def assert_no_secret(where: str, text: str) -> None:
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert not leaked, f"{where} contains the {', '.join(leaked)}"


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class Tls:
    ca_pem: Path  # the CA certificate (what clients trust)
    keystore: Path  # PKCS12: the broker's key and its certificate signed by the CA
    truststore: Path  # PKCS12 (keytool): the CA, for the broker's own inter-broker client


def make_tls(root: Path, store_password: str) -> Tls:
    """A throwaway CA and a broker certificate for 127.0.0.1/localhost, with openssl and keytool."""
    root.mkdir(parents=True, exist_ok=True)

    def run(*cmd: str) -> None:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, f"{cmd[0]} {cmd[1]} failed: {res.stderr[-1500:]}"

    ca_key, ca_pem, key, csr, cert = (root / n for n in ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.pem"))
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_pem),
        "-days", "2", "-subj", "/CN=driftline-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost")
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(root / "san.ext"))
    tls = Tls(ca_pem, root / "broker.p12", root / "truststore.p12")
    run("openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile", str(ca_pem),
        "-name", "broker", "-out", str(tls.keystore), "-passout", f"pass:{store_password}")
    run("keytool", "-importcert", "-noprompt", "-alias", "driftline-test-ca", "-file", str(ca_pem),
        "-keystore", str(tls.truststore), "-storetype", "PKCS12", "-storepass", store_password)
    return tls


# --------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout_s: float = 150.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=2) as res:
                if res.status == 200:
                    return self.url
            time.sleep(0.5)
        pytest.fail(f"mlflow server at {self.url} not ready in {timeout_s:.0f}s:\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server --app-name basic-auth`` on a free port: the project's auth settings
    (conf/mlflow/basic_auth.ini) with a temporary SQLite user store; the admin user and the
    Flask key from the environment, as docker-compose.yml passes them. Not waited for here."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    auth = configparser.ConfigParser()
    auth.read(PROJECT_ROOT / "conf" / "mlflow" / "basic_auth.ini")
    auth["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    with (root / "basic_auth.ini").open("w") as fh:
        auth.write(fh)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_SECRET,
    }
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root,
            start_new_session=True,
        )
    try:
        yield MlflowServer(f"http://127.0.0.1:{port}", proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)  # a throwaway server: no need for a long graceful stop
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- the SASL_SSL broker


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"), STORE_PASSWORD)


@pytest.fixture(scope="module")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, base_platform: PlatformConfig, tls: Tls, mlflow_server: MlflowServer
) -> Iterator[EmbeddedBroker]:
    """A second broker on free ports: SASL_SSL (SCRAM-SHA-512) is its only client listener.
    (Needs ``mlflow_server`` only so that the server's start-up overlaps the broker's.)"""
    broker = EmbeddedBroker(
        home=tmp_path_factory.mktemp("secure-kafka"),
        jars=Path(base_platform.path(base_platform.jars_dir)) / "kafka",
        port=free_port(),
        controller_port=free_port(),
        security=BrokerSecurity(
            keystore=tls.keystore, truststore=tls.truststore, ca_file=tls.ca_pem,
            users=(("broker", BROKER_PASSWORD), (CLIENT_USER, CLIENT_PASSWORD)),
            keystore_password=STORE_PASSWORD, truststore_password=STORE_PASSWORD,
        ),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)


@pytest.fixture(scope="module")
def secure(base_platform: PlatformConfig, secure_broker: EmbeddedBroker, tls: Tls) -> Iterator[PlatformConfig]:
    """The platform config for the secured broker; the credentials are only in the environment."""
    data = base_platform.model_dump(mode="json")
    data["kafka"]["bootstrap_servers"] = secure_broker.bootstrap
    data["kafka"]["security"] = {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                 "ssl_ca_location": str(tls.ca_pem)}
    platform = PlatformConfig.model_validate(data)
    assert CLIENT_PASSWORD not in platform.model_dump_json()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(USER_ENV, CLIENT_USER)
        mp.setenv(PASSWORD_ENV, CLIENT_PASSWORD)
        yield platform


@pytest.fixture(scope="module")
def published(secure: PlatformConfig) -> tuple[str, set[tuple[str, str]]]:
    """A topic created (kafka-python admin) and filled (the project's producer) over SASL_SSL:
    its name and the (key, value) pairs written."""
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(secure.kafka, [topic], partitions=2) == [topic]
    records = {(f"k{i}", json.dumps({"i": i, "note": "over sasl_ssl"})) for i in range(N_RECORDS)}
    failures: list[Any] = []
    producer = make_producer(secure.kafka)
    for key, value in sorted(records):
        producer.produce(topic, value.encode(), key.encode(), on_delivery=lambda err, _m: err and failures.append(err))
    assert producer.flush(30) == 0 and not failures, failures
    return topic, records


def consume(platform: PlatformConfig, topic: str, expected: int, timeout_s: float = 30.0) -> set[tuple[str, str]]:
    consumer = make_consumer(platform.kafka, f"sec-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    got: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            got.add((msg.key().decode(), msg.value().decode()))
    finally:
        consumer.close()
    return got


def test_project_clients_publish_and_read_back_over_sasl_ssl(
    secure: PlatformConfig, published: tuple[str, set[tuple[str, str]]]
) -> None:
    topic, records = published
    opts = secure.kafka.client_options()
    assert (opts["security.protocol"], opts["sasl.mechanism"], opts["sasl.username"]) == (
        "SASL_SSL", "SCRAM-SHA-512", CLIENT_USER)
    assert consume(secure, topic, len(records)) == records


def test_a_wrong_password_is_refused_with_an_authentication_error(
    secure: PlatformConfig, published: tuple[str, set[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    topic, records = published
    wrong = "not-the-password-" + secrets.token_hex(4)
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    caplog.set_level("DEBUG", logger="kafka")
    started = time.monotonic()

    # consumer: an _AUTHENTICATION error, nothing read
    errors: list[KafkaError] = []
    consumer = make_consumer(secure.kafka, f"sec-{uuid.uuid4().hex[:6]}", error_cb=errors.append)
    consumer.subscribe([topic])
    read = []
    try:
        while time.monotonic() - started < REFUSAL_TIMEOUT_S and not any(
                e.code() == KafkaError._AUTHENTICATION for e in errors):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                read.append(msg)
    finally:
        consumer.close()
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, f"no authentication error within {REFUSAL_TIMEOUT_S:.0f}s: {[str(e) for e in errors]}"
    assert "Authentication failed during authentication due to invalid credentials with SASL mechanism " \
           "SCRAM-SHA-512" in auth[0].str()
    assert read == []

    # producer: the same error, and the record is not delivered (it times out, it is not written)
    perrors: list[KafkaError] = []
    delivered: list[KafkaError | None] = []
    producer = make_producer(secure.kafka, error_cb=perrors.append, message_timeout_ms=3000)
    producer.produce(topic, b"{}", b"intruder", on_delivery=lambda err, _m: delivered.append(err))
    assert producer.flush(REFUSAL_TIMEOUT_S) == 0
    assert [e.code() if e else None for e in delivered] == [KafkaError._MSG_TIMED_OUT]
    assert KafkaError._AUTHENTICATION in {e.code() for e in perrors}, [str(e) for e in perrors]

    # topic administration (kafka-python) gives up within its timeout
    with pytest.raises(BrokerError, match=f"cannot reach Kafka at {secure.kafka.bootstrap}"):
        ensure_topics(secure.kafka, [f"sec-{uuid.uuid4().hex[:8]}"], timeout_s=3)
    assert time.monotonic() - started < 3 * REFUSAL_TIMEOUT_S
    # what the clients logged (librdkafka on stderr, kafka-python through logging) names the refusal, not a password
    logged = capfd.readouterr().err + caplog.text
    assert "SASL authentication error: Authentication failed" in logged
    assert_no_secret("the clients' logs", logged)
    assert wrong not in logged

    # control: the right password from the environment works, and nothing was written
    monkeypatch.setenv(PASSWORD_ENV, CLIENT_PASSWORD)
    assert sum(high for _, high in kafka_watermarks(secure.kafka, topic).values()) == len(records)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes in /proc/net/tcp and tcp6)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def metadata_error(conf: dict[str, str]) -> tuple[KafkaError, list[KafkaError]]:
    """The error a metadata request with ``conf`` ends in (it must fail), and the client's errors."""
    errors: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException) as failed:
        admin.list_topics(timeout=3)
    admin.poll(0.5)
    return failed.value.args[0], errors


def test_no_plaintext_listener_is_open(secure_broker: EmbeddedBroker, tls: Tls) -> None:
    pid = secure_broker.pid()
    assert pid is not None
    assert listening_ports(pid) == {secure_broker.port, secure_broker.controller_port}
    props = secure_broker.properties_file.read_text()
    assert f"listeners=SASL_SSL://{secure_broker.bootstrap},CONTROLLER://" in props
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT" in props

    # plaintext, and TLS without SASL, on the client port: the broker drops the connection
    err, _ = metadata_error({"bootstrap.servers": secure_broker.bootstrap})
    assert err.code() == KafkaError._TRANSPORT, err
    err, _ = metadata_error({"bootstrap.servers": secure_broker.bootstrap, "security.protocol": "SSL",
                             "ssl.ca.location": str(tls.ca_pem)})
    assert err.code() == KafkaError._TRANSPORT, err
    # the controller listener (loopback) serves no client requests: no metadata, no topics
    err, _ = metadata_error({"bootstrap.servers": f"{secure_broker.host}:{secure_broker.controller_port}"})
    assert err.code() == KafkaError._UNSUPPORTED_FEATURE, err
    # control: the broker's own SCRAM user over SASL_SSL gets the metadata
    assert AdminClient(secure_broker.admin_options()).list_topics(timeout=10).brokers


# --------------------------------------------------------------------------- Spark over SASL_SSL


@contextlib.contextmanager
def driver_log_capture(spark: SparkSession, path: Path) -> Iterator[None]:
    """Every log event of the driver JVM at INFO and above goes to ``path`` (a log4j2 file
    appender on the root logger) while the block runs; the console gets none of them."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log4j = jvm.org.apache.logging.log4j
    ctx = log4j.LogManager.getContext(False)
    config = ctx.getConfiguration()
    name = f"driftline-security-{uuid.uuid4().hex[:6]}"
    appender = (log4j.core.appender.FileAppender.newBuilder().withFileName(str(path)).setName(name)
                .setLayout(log4j.core.layout.PatternLayout.createDefaultLayout()).build())
    appender.start()
    config.addAppender(appender)
    root = config.getRootLogger()
    before = set(root.getAppenders().keySet())
    loggers = list(jvm.java.util.ArrayList(config.getLoggers().values()))
    levels = [(lc, lc.getLevel()) for lc in loggers]
    console = [(ref, root.getAppenders().get(ref.getRef())) for ref in list(jvm.java.util.ArrayList(root.getAppenderRefs()))]
    for ref, _ in console:
        root.removeAppender(ref.getRef())
    root.addAppender(appender, log4j.Level.INFO, None)
    for lc in loggers:
        lc.setLevel(log4j.Level.INFO)
    ctx.updateLoggers()
    try:
        yield
    finally:
        root.removeAppender(name)
        for ref, app in console:
            if app is not None:
                root.addAppender(app, ref.getLevel(), ref.getFilter())
        for lc, level in levels:
            lc.setLevel(level)
        ctx.updateLoggers()
        config.removeAppender(name)
        appender.stop()
        assert set(root.getAppenders().keySet()) == before  # the console is back


@contextlib.contextmanager
def event_log(spark: SparkSession, directory: Path) -> Iterator[None]:
    """A Spark event log (Spark's own ``EventLoggingListener``, uncompressed) of what the
    session does while the block runs, under ``directory``."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    sc = spark.sparkContext._jsc.sc()  # type: ignore[union-attr]
    conf = sc.conf().clone().set("spark.eventLog.compress", "false")
    listener = jvm.org.apache.spark.scheduler.EventLoggingListener(
        f"security-{uuid.uuid4().hex[:6]}", jvm.scala.Option.apply(None), jvm.java.net.URI(directory.as_uri()), conf,
        spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    listener.start()
    sc.addSparkListener(listener)
    try:
        yield
    finally:
        sc.listenerBus().waitUntilEmpty()
        sc.removeSparkListener(listener)
        listener.stop()


@dataclass(frozen=True)
class SparkRead:
    rows: set[tuple[str, str, int]]
    plan: str
    driver_log: str
    event_log: str


@pytest.fixture(scope="module")
def spark_read(
    spark: SparkSession, secure: PlatformConfig, published: tuple[str, set[tuple[str, str]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> SparkRead:
    """The session's batch read of the topic over SASL_SSL (the project's read_kafka_batch, options
    from the platform config and the environment), with its driver log and an event log."""
    topic, _ = published
    root = tmp_path_factory.mktemp("spark-security")
    (root / "events").mkdir()
    with event_log(spark, root / "events"), driver_log_capture(spark, root / "driver.log"):
        df = read_kafka_batch(spark, secure.kafka, topic)
        rows = df.selectExpr("CAST(key AS STRING) AS k", "CAST(value AS STRING) AS v", "partition").collect()
        plan = str(df._jdf.queryExecution().toString())
    events = "\n".join(p.read_text() for p in sorted((root / "events").rglob("*")) if p.is_file()
                       and not p.name.startswith("."))
    return SparkRead({(r["k"], r["v"], r["partition"]) for r in rows}, plan, (root / "driver.log").read_text(), events)


def test_spark_reads_the_topic_over_sasl_ssl_with_credentials_from_the_environment(
    spark_read: SparkRead, published: tuple[str, set[tuple[str, str]]]
) -> None:
    _, records = published
    assert {(k, v) for k, v, _ in spark_read.rows} == records
    assert len(spark_read.rows) == N_RECORDS  # each record once
    assert {p for _, _, p in spark_read.rows} == {0, 1}


def test_no_secret_in_logs_event_log_plan_or_spark_conf(
    spark: SparkSession, spark_read: SparkRead, secure: PlatformConfig, secure_broker: EmbeddedBroker
) -> None:
    # the broker's logs (it logged its SASL_SSL listener and the refused logins of the tests above)
    broker_logs = "\n".join(p.read_text(errors="replace") for p in sorted(secure_broker.log_dir.iterdir()))
    assert "ListenerName(SASL_SSL)" in broker_logs
    assert_no_secret("the broker's logs", broker_logs)
    # the driver's logs: the Kafka clients' configuration dumps are in, with the JAAS line hidden
    assert "sasl.jaas.config = [hidden]" in spark_read.driver_log
    assert_no_secret("the driver's log", spark_read.driver_log)
    # the event log: the SQL execution and its plan are in, the secret is not
    assert "SparkListenerSQLExecutionStart" in spark_read.event_log and "KafkaRelation" in spark_read.event_log
    assert_no_secret("the Spark event log", spark_read.event_log)
    assert_no_secret("the query plan", spark_read.plan)
    # the SparkConf and the JVM's system properties (the UI's environment page) never held it
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext.getConf()
    assert_no_secret("the SparkConf", json.dumps(conf.getAll()))
    assert_no_secret("the JVM system properties", str(jvm.System.getProperties().toString()))

    # Spark's redaction with the project's pattern: what the environment page and the plans show
    assert conf.get("spark.redaction.regex") == REDACTION_REGEX
    options = secure.kafka.client_options("spark")
    probes = {**options,
              "spark.kafka.clusters.main.sasl.jaas.config": options["kafka.sasl.jaas.config"],
              # a JAAS login without the words password, secret or token: hidden by the project's pattern only
              "spark.kafka.clusters.oauth.sasl.jaas.config":
                  "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId=\"app\";",
              "spark.hadoop.fs.s3a.secret.key": "s", "spark.some.password": "p", "spark.auth.token": "t",
              "spark.app.note": f"a value with password={CLIENT_PASSWORD}"}
    pairs = jvm.java.util.ArrayList()
    for key, value in probes.items():
        pairs.add(jvm.scala.Tuple2(key, value))
    seq = jvm.scala.jdk.javaapi.CollectionConverters.asScala(pairs).toSeq()
    shown = {}
    for result in (jvm.org.apache.spark.util.Utils.redact(spark.sparkContext._jsc.sc().conf(), seq),  # type: ignore[union-attr]
                   spark._jsparkSession.sessionState().conf().redactOptions(seq)):
        redacted = list(jvm.scala.jdk.javaapi.CollectionConverters.asJava(result))
        shown = {t._1(): t._2() for t in redacted}
        hidden = {k for k, v in shown.items() if v != probes[k]}
        assert hidden == set(probes) - {"kafka.bootstrap.servers", "kafka.security.protocol", "kafka.sasl.mechanism",
                                        "kafka.ssl.truststore.location", "kafka.ssl.truststore.type"}, shown
        assert_no_secret("Spark's redacted view", json.dumps(shown))
    assert shown["kafka.bootstrap.servers"] == secure.kafka.bootstrap  # control: plain settings stay readable


# --------------------------------------------------------------------------- MLflow with authentication


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return int(res.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@contextlib.contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """client_for sets MLflow's process-wide URIs: put back the session's afterwards."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)


def test_mlflow_server_refuses_anonymous_calls_and_takes_credentials_from_the_environment(
    mlflow_server: MlflowServer, secure: PlatformConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = mlflow_server.wait_ready()
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search) == 401
    assert http_status(search, (MLFLOW_ADMIN, "not-the-password")) == 401
    assert http_status(search, (MLFLOW_ADMIN, MLFLOW_PASSWORD)) == 200  # control

    data = secure.model_dump(mode="json")
    data["mlflow"]["tracking_uri"] = url
    platform = PlatformConfig.model_validate(data)
    check_tracking(platform)  # the jobs' preflight accepts a server that asks for credentials
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with mlflow_uris_kept():
        with pytest.raises(MlflowException, match="401|not authenticated"):
            client_for(platform).search_experiments(max_results=1)

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
        client = client_for(platform)
        exp = client.create_experiment(f"security-{uuid.uuid4().hex[:6]}")
        run = client.create_run(exp)
        # the params a training run logs (tracking.log_training_run), with the SASL credentials in the environment
        spec = model_spec(FRAUD)
        params = {**lineage_params(FRAUD, spec, platform, DataRef("/lake/silver/fraud", 3), "4.2.0"),
                  **spec_params(spec)}
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])  # as mlflow.log_params
        logged = client.get_run(run.info.run_id).data
    assert logged.params == params
    assert_no_secret("the MLflow params and tags", json.dumps([logged.params, logged.tags]))
    assert_no_secret("the MLflow server's log", mlflow_server.log.read_text(errors="replace"))
