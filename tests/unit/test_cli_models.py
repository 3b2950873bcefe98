"""The model registry commands: registered on the main CLI, clear output on an empty store."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from driftline.cli import main


def test_help_lists_the_model_commands() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("promote", "rollback", "models"):
        assert command in out
    promote_help = CliRunner().invoke(main, ["promote", "--help"]).output
    assert "--version" in promote_help and "--force" in promote_help


def test_models_on_an_empty_store_says_so(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(main, ["--set", f"mlflow.tracking_uri={uri}", "--set", f"mlflow.home={tmp_path}",
                                    "models", "--usecase", "fraud"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "fraud-model: no versions registered"


def test_unknown_usecase_is_a_clear_error() -> None:
    res = CliRunner().invoke(main, ["models", "--usecase", "nope"])
    assert res.exit_code == 2
    assert "usecase: 'nope' is not defined" in res.output
