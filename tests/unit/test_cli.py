from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from driftline.cli import main


def test_help_lists_the_commands() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("kafka", "topics", "demo"):
        assert command in out


def test_bad_config_key_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["--set", "kafka.embedded.prot=1", "kafka", "status"])
    assert res.exit_code == 2
    assert "kafka.embedded.prot: unknown key" in res.output


def test_status_of_a_stopped_broker_exits_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["--set", f"kafka.embedded.home={tmp_path}", "kafka", "status"])
    assert res.exit_code == 1
    assert res.output.startswith("Kafka broker stopped at 127.0.0.1:9092")


def test_cluster_ids_never_start_with_a_dash() -> None:
    from driftline.kafka.broker import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
