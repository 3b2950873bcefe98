"""The embedded broker's lifecycle and its failure messages, against real processes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from driftline.errors import BrokerError
from driftline.kafka.broker import EmbeddedBroker, find_java, free_port


def _broker(broker: EmbeddedBroker, home: Path, **kw: object) -> EmbeddedBroker:
    args = dict(home=home, jars=broker.jars, port=free_port(), controller_port=free_port(), start_timeout_s=30.0)
    args.update(kw)
    return EmbeddedBroker(**args)  # type: ignore[arg-type]


def test_session_broker_reports_running(broker: EmbeddedBroker) -> None:
    status = broker.status()
    assert status["running"] is True and status["accepting"] is True
    assert status["bootstrap"] == f"127.0.0.1:{broker.port}"
    assert (broker.data_dir / "meta.properties").exists()


def test_missing_java_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerError, match="Java was not found.*Java 17"):
        find_java()


def test_port_in_use_is_named(broker: EmbeddedBroker, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        b = _broker(broker, tmp_path / "k", port=taken)
        with pytest.raises(BrokerError, match=rf"kafka\.embedded\.port: 127\.0\.0\.1:{taken} is already in use"):
            b.start()
    assert b.pid() is None


def test_broker_that_fails_to_start_shows_its_log(broker: EmbeddedBroker, tmp_path: Path) -> None:
    b = _broker(broker, tmp_path / "k")
    # storage formatted for another node id: the real broker refuses to start
    b.data_dir.mkdir(parents=True)
    (b.data_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(BrokerError) as err:
        b.start()
    msg = str(err.value)
    assert "exited with code" in msg and "last lines of" in msg
    assert "node.id" in msg or "Stored node id" in msg
    assert b.pid() is None


def test_start_stop_status_cycle(broker: EmbeddedBroker, tmp_path: Path) -> None:
    b = _broker(broker, tmp_path / "k")
    b.start()
    pid = b.pid()
    try:
        assert pid is not None and b.status()["accepting"] is True
        assert b.start().pid() == pid  # a second start is a no-op
    finally:
        assert b.stop() is True
    assert b.pid() is None and b.status()["running"] is False
    assert b.stop() is False
