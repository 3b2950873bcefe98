"""Checks a job makes before it starts Spark: is the Kafka broker there, is the MLflow
store one it can reach. A job that would otherwise wait minutes on a wrong address
(librdkafka and Spark's Kafka client retry, MLflow's HTTP client backs off for minutes)
stops within seconds instead, with a message naming the setting and what to do, and
before it has written anything (no table, no checkpoint).

:func:`driftline.jobs.entry_point` runs a job's ``preflight`` after the configuration is
loaded and before its ``run``::

    main = entry_point("ingest", __doc__, run=_run, preflight=needs(kafka=True))

    check_broker(platform.kafka)        # BrokerError after BROKER_TIMEOUT_S without an answer
    check_tracking(platform)            # ConfigError: an unknown scheme, or no server at an http(s) URI
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from driftline.config import KafkaConfig, PlatformConfig
from driftline.errors import BrokerError, ConfigError

if TYPE_CHECKING:
    from driftline.jobs import JobContext

BROKER_TIMEOUT_S = 8.0
TRACKING_TIMEOUT_S = 8.0
# the schemes MLflow 3 has a tracking and registry store for (a SQLAlchemy URI may add "+driver")
TRACKING_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                    "databricks-uc", "uc")


def check_broker(kafka: KafkaConfig, timeout_s: float = BROKER_TIMEOUT_S) -> None:
    """Raise :class:`BrokerError` unless a broker at ``kafka.bootstrap`` answers a metadata
    request within ``timeout_s`` (with the configured security settings)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    where = ("the embedded broker: start it with `driftline kafka start`, or set kafka.bootstrap_servers"
             if kafka.uses_embedded else
             "check kafka.bootstrap_servers (conf/platform.yaml, DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS or "
             "--set kafka.bootstrap_servers=host:port) and that the broker is running")
    try:
        AdminClient({**kafka.client_options(), "socket.connection.setup.timeout.ms": int(timeout_s * 1000)}
                    ).list_topics(timeout=timeout_s)
    except KafkaException as e:
        reason = e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap} within {timeout_s:g}s ({reason}); "
                          f"{where}") from e


def check_tracking(platform: PlatformConfig, timeout_s: float = TRACKING_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` when ``mlflow.tracking_uri`` has a scheme MLflow has no
    store for, or is an http(s) server that does not answer within ``timeout_s``. Any
    HTTP answer counts as reachable (authentication is MLflow's business); local stores
    (SQLite, files) are created on first use and are not checked here."""
    from driftline.tracking import tracking_uri

    uri = tracking_uri(platform)
    fix = ("fix mlflow.tracking_uri (conf/platform.yaml, DRIFTLINE_MLFLOW__TRACKING_URI or "
           "--set mlflow.tracking_uri=...), or leave it unset for the local store under mlflow.home")
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if scheme not in TRACKING_SCHEMES and len(scheme) > 1:  # one letter: a Windows drive
        raise ConfigError(f"mlflow.tracking_uri: got {uri!r}, whose scheme {scheme!r} MLflow has no store for "
                          f"(expected one of {', '.join(s for s in TRACKING_SCHEMES if s)}); {fix}")
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"mlflow.tracking_uri: no MLflow server answers at {uri} within {timeout_s:g}s "
                          f"({reason}); start it or {fix}") from e


def needs(*, kafka: bool = False, mlflow: bool = False) -> Callable[[JobContext], None]:
    """A ``preflight`` for :func:`driftline.jobs.entry_point`: check the broker and/or the MLflow store.

    Example::

        entry_point("score", __doc__, run=_run, preflight=needs(kafka=True, mlflow=True))
    """

    def preflight(ctx: JobContext) -> None:
        if mlflow:
            check_tracking(ctx.platform)
        if kafka:
            check_broker(ctx.platform.kafka)

    return preflight
