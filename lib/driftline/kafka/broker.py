"""The embedded Apache Kafka broker: one KRaft node on loopback.

It runs the real broker (``kafka.Kafka``) from the jars ``make setup`` resolved
into ``.driftline/jars/kafka``, keeps its data and logs under one home
directory, and is controlled with ``driftline kafka start | stop | status``::

    broker = EmbeddedBroker.from_config(load_platform())
    broker.start()           # formats storage on first start, waits until ready
    broker.bootstrap         # '127.0.0.1:9092'
    broker.stop()

With a :class:`BrokerSecurity` the only client listener is SASL_SSL (SCRAM): the
broker's TLS keystore and truststore are given, and the SCRAM users are created when
the storage is formatted (the controller listener stays on loopback, as always)::

    EmbeddedBroker(home, jars, port=19092, controller_port=19093,
                   security=BrokerSecurity(keystore=p12, keystore_password=pw, truststore=ca_p12,
                                           truststore_password=pw, ca_file=ca_pem,
                                           users=(("broker", bpw), ("app", apw))))
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from driftline.config import PlatformConfig
from driftline.errors import BrokerError, SetupError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30


def find_java() -> str:
    """Path of the ``java`` binary (``$JAVA_HOME/bin/java`` first, then ``PATH``)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "Java was not found (no $JAVA_HOME/bin/java, no `java` on PATH): the Kafka broker "
            "needs Java 17 or later, e.g. `apt-get install openjdk-17-jre-headless`"
        )
    return found


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and side-by-side brokers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    """Kafka's Uuid text form: URL-safe base64 of 16 bytes, without padding.

    Like Kafka's own ``Uuid.randomUuid``, ids starting with '-' are drawn again:
    the storage tool would read one as a command-line option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL client listener with SCRAM authentication (no plaintext client listener).

    ``keystore`` (PKCS12) holds the broker's key and certificate, ``truststore`` (PKCS12 or
    JKS) the CA its own clients trust; ``ca_file`` is that CA as PEM, for the broker's
    readiness check. ``users`` are ``(name, password)`` SCRAM credentials written into the
    cluster metadata when the storage is formatted (so only on a fresh ``home``); the first
    is the broker's own inter-broker user. Passwords never appear in ``repr``.
    """

    keystore: Path
    truststore: Path
    ca_file: Path
    users: tuple[tuple[str, str], ...] = field(repr=False)
    keystore_password: str = field(repr=False)
    truststore_password: str = field(repr=False)
    mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        if not self.users:
            raise BrokerError("BrokerSecurity.users: expected at least the broker's own SCRAM user")
        for name, password in self.users:
            # the StorageTool parses name=...,password=... and the JAAS line quotes the values
            if not name or not password or any(c in name + password for c in '",=[]\\ ;'):
                raise BrokerError(
                    f"BrokerSecurity.users: user {name!r}: names and passwords must be non-empty, "
                    "without quotes, commas, '=', brackets, spaces, ';' or backslashes"
                )

    @property
    def broker_user(self) -> tuple[str, str]:
        return self.users[0]

    def jaas_config(self) -> str:
        name, password = self.broker_user
        return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{name}" password="{password}";'


@dataclass(frozen=True)
class EmbeddedBroker:
    """A single-node KRaft broker rooted at ``home``; see the module docstring."""

    home: Path
    jars: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    start_timeout_s: float = 60.0
    # a SASL_SSL (SCRAM) client listener instead of PLAINTEXT; None: plaintext on loopback
    security: BrokerSecurity | None = None
    # broker properties added to (or replacing) the defaults, e.g. a short
    # ``log.retention.check.interval.ms`` for a test that lets data age out
    extra_properties: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_config(cls, platform: PlatformConfig) -> EmbeddedBroker:
        emb = platform.kafka.embedded
        return cls(
            home=Path(platform.path(emb.home)),
            jars=Path(platform.path(platform.jars_dir)) / "kafka",
            host=emb.host,
            port=emb.port,
            controller_port=emb.controller_port,
            heap=emb.heap,
            start_timeout_s=emb.start_timeout_s,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listener_protocol(self) -> str:
        """The security protocol of the one client listener: PLAINTEXT or SASL_SSL."""
        return "SASL_SSL" if self.security else "PLAINTEXT"

    def admin_options(self) -> dict[str, str]:
        """confluent-kafka options for the broker's own admin connection (its readiness
        check): the bootstrap address, plus TLS and the broker's SCRAM user when secured."""
        opts = {"bootstrap.servers": self.bootstrap}
        sec = self.security
        if sec is not None:
            name, password = sec.broker_user
            opts.update({"security.protocol": "SASL_SSL", "sasl.mechanism": sec.mechanism,
                         "sasl.username": name, "sasl.password": password, "ssl.ca.location": str(sec.ca_file)})
        return opts

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    # -- inspection ---------------------------------------------------------

    def pid(self) -> int | None:
        """The broker's process id if it is alive, else None (stale files are removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        except PermissionError:
            return pid
        if _is_zombie(pid):
            return None
        return pid

    def status(self) -> dict[str, object]:
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": self.bootstrap,
            "accepting": pid is not None and port_in_use(self.host, self.port),
            "home": str(self.home),
        }

    # -- lifecycle ----------------------------------------------------------

    def _classpath(self) -> str:
        jars = sorted(self.jars.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise SetupError(
                f"Kafka broker jars not found in {self.jars}: run `make setup` (bin/fetch-jars) once"
            )
        return os.pathsep.join(str(j) for j in jars)

    def _write_properties(self) -> None:
        client = self.listener_protocol
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"{client}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"{client}://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "message.max.bytes": str(8 * 1024 * 1024),
            **self.extra_properties,
        }
        sec = self.security
        if sec is not None:
            props.update({
                "sasl.enabled.mechanisms": sec.mechanism,
                "sasl.mechanism.inter.broker.protocol": sec.mechanism,
                f"listener.name.sasl_ssl.{sec.mechanism.lower()}.sasl.jaas.config": sec.jaas_config(),
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(sec.keystore),
                "ssl.keystore.password": sec.keystore_password,
                "ssl.key.password": sec.keystore_password,
                "ssl.truststore.location": str(sec.truststore),
                "ssl.truststore.password": sec.truststore_password,
                "ssl.client.auth": "none",
            })
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties_file.touch(mode=0o600)  # with security it holds the keystore and broker passwords
        self.properties_file.chmod(0o600)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _java_cmd(self, main: str, args: Iterable[str]) -> list[str]:
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2.replace("@LOG@", str(self.server_log)))
        return [
            find_java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        scram: list[str] = []
        if self.security is not None:
            for name, password in self.security.users:
                scram += ["--add-scram", f"{self.security.mechanism}=[name={name},password={password}]"]
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            ["format", "-t", _cluster_id(), "-c", str(self.properties_file), "--ignore-formatted", *scram],
        )
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def start(self) -> EmbeddedBroker:
        """Start the broker unless it already runs; return when it serves requests.

        Raises :class:`BrokerError` when Java is missing, a port is taken by another
        process, or the broker does not come up in time (with the tail of its log).
        """
        if self.pid() is not None:
            self.wait_ready()
            log.info("Kafka broker already running at %s (pid %s)", self.bootstrap, self.pid())
            return self
        find_java()
        for name, port in (("port", self.port), ("controller_port", self.controller_port)):
            if port_in_use(self.host, port):
                raise BrokerError(
                    f"kafka.embedded.{name}: {self.host}:{port} is already in use by another process; "
                    f"stop it or choose another port (--set kafka.embedded.{name}=<port>)"
                )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()
        out = (self.log_dir / "stdout.log").open("ab")
        proc = subprocess.Popen(
            self._java_cmd("kafka.Kafka", [str(self.properties_file)]),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it
        )
        out.close()
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(proc=proc)
        except BrokerError:
            self._terminate(proc.pid, timeout_s=10)
            raise
        log.info("Kafka broker started at %s (pid %s, home %s)", self.bootstrap, proc.pid, self.home)
        return self

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers a metadata request, or raise BrokerError."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.start_timeout_s
        admin = AdminClient({**self.admin_options(), "log_level": 0})
        last_error = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"the Kafka broker exited with code {proc.returncode} while starting; "
                    f"last lines of {self.server_log}:\n{self._log_tail()}"
                )
            if port_in_use(self.host, self.port):
                try:
                    md = admin.list_topics(timeout=2)
                    if md.brokers:
                        return
                except Exception as e:  # noqa: BLE001 - any client error means "not yet"
                    last_error = str(e)
            time.sleep(0.3)
        raise BrokerError(
            f"the Kafka broker at {self.bootstrap} did not become ready within "
            f"{self.start_timeout_s:.0f}s ({last_error}); last lines of {self.server_log}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        server = tail(self.server_log)
        stdout = tail(self.log_dir / "stdout.log", 10)
        return server if "no log at" not in server else stdout

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns False when no broker was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        self._terminate(pid, timeout_s)
        log.info("Kafka broker (pid %s) stopped", pid)
        return True

    def _terminate(self, pid: int, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = @LOG@
appender.file.filePattern = @LOG@.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""
