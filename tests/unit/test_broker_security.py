"""The embedded broker's SASL_SSL option (BrokerSecurity): the properties it writes, without
starting a broker (tests/reliability/test_security.py starts one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.errors import BrokerError
from driftline.kafka.broker import BrokerSecurity, EmbeddedBroker


def _security(tmp_path: Path, **kw: object) -> BrokerSecurity:
    args: dict[str, object] = dict(
        keystore=tmp_path / "broker.p12", truststore=tmp_path / "trust.p12", ca_file=tmp_path / "ca.pem",
        users=(("broker", "b-pass-123"), ("app", "a-pass-456")), keystore_password="ks-pass-789",
        truststore_password="ts-pass-000")
    args.update(kw)
    return BrokerSecurity(**args)  # type: ignore[arg-type]


def _props(broker: EmbeddedBroker) -> dict[str, str]:
    broker._write_properties()
    lines = broker.properties_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_the_only_client_listener_is_sasl_ssl(tmp_path: Path) -> None:
    sec = _security(tmp_path)
    broker = EmbeddedBroker(home=tmp_path / "k", jars=tmp_path, port=19092, controller_port=19093, security=sec)
    props = _props(broker)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19092"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert 'username="broker" password="b-pass-123"' in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert (props["ssl.keystore.location"], props["ssl.truststore.location"]) == (str(sec.keystore), str(sec.truststore))
    assert broker.properties_file.stat().st_mode & 0o077 == 0  # it holds passwords: owner only
    assert broker.admin_options()["security.protocol"] == "SASL_SSL"
    # the plaintext default is unchanged
    plain = _props(EmbeddedBroker(home=tmp_path / "p", jars=tmp_path, port=19094, controller_port=19095))
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in plain)


def test_passwords_stay_out_of_repr_and_unsafe_ones_are_refused(tmp_path: Path) -> None:
    text = repr(EmbeddedBroker(home=tmp_path, jars=tmp_path, security=_security(tmp_path)))
    assert not any(p in text for p in ("b-pass-123", "a-pass-456", "ks-pass-789", "ts-pass-000"))
    with pytest.raises(BrokerError, match="user 'app'"):
        _security(tmp_path, users=(("broker", "b-pass-123"), ("app", 'with"quote')))
    with pytest.raises(BrokerError, match="at least the broker's own SCRAM user"):
        _security(tmp_path, users=())
