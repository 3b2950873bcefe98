"""``driftline promote | rollback | models``: the model registry from the command line.

    driftline models --usecase fraud                  versions, aliases, test metrics
    driftline promote --usecase fraud                 the challenger, through the quality gate
    driftline promote --usecase fraud --version 3 --force
    driftline rollback --usecase fraud                champion back to the version it replaced
    driftline route --usecase fraud --mode canary --share 0.25
                                                      how the challenger takes part in online scoring

Every change is recorded in ``audit/<uc>_model_events``. ``promote`` without
``--force`` re-scores the champion on the candidate's own test set (rebuilt from
the run's Delta path and version), so it starts a local Spark session.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from driftline.cli.context import Context, pass_ctx
from driftline.config import load_usecase

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _spark(ctx: Context) -> SparkSession:
    from driftline.session import build_session

    return build_session(ctx.platform, "driftline-models")


@click.command("models")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@pass_ctx
def models(ctx: Context, usecase: str, as_json: bool) -> None:
    """List the versions of <uc>-model with their aliases and test metrics."""
    from driftline.registry import format_versions, list_versions, model_name

    uc = load_usecase(usecase)
    rows = list_versions(ctx.platform, uc)
    if as_json:
        click.echo(json.dumps(rows, default=str))
    elif not rows:
        click.echo(f"{model_name(uc)}: no versions registered")
    else:
        click.echo(format_versions(rows))


@click.command("promote")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--version", type=int, default=None, help="Version to promote [the challenger].")
@click.option("--force", is_flag=True, help="Skip the quality gate (audited as forced).")
@pass_ctx
def promote(ctx: Context, usecase: str, version: int | None, force: bool) -> None:
    """Make a version champion; without --force only if it passes the gate (exit 1 if refused)."""
    from driftline.registry import promote as do_promote

    uc = load_usecase(usecase)
    decision = do_promote(_spark(ctx), ctx.platform, uc, version, force=force)
    if decision is None:
        click.echo(f"{uc.name}-model: version {version or 'challenger'} is champion (forced)")
    elif decision.passed:
        click.echo(f"{uc.name}-model: promoted to champion: {decision.reason}")
    else:
        click.echo(f"{uc.name}-model: gate refused: {decision.reason}", err=True)
        raise SystemExit(1)


@click.command("rollback")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@pass_ctx
def rollback(ctx: Context, usecase: str) -> None:
    """Point champion back at the version the current champion replaced."""
    from driftline.registry import rollback as do_rollback

    uc = load_usecase(usecase)
    version = do_rollback(_spark(ctx), ctx.platform, uc)
    click.echo(f"{uc.name}-model: champion is version {version} again")


@click.command("route")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--mode", type=click.Choice(["champion", "shadow", "canary"]), required=True,
              help="champion: the challenger is not scored; shadow: scored and stored, never served; "
                   "canary: serves --share of the entities.")
@click.option("--share", type=click.FloatRange(0.0, 1.0), default=None,
              help="Canary share of entities, 0..1 (e.g. 0.05, then 0.25, then 1.0) [unchanged].")
@pass_ctx
def route(ctx: Context, usecase: str, mode: str, share: float | None) -> None:
    """Change how the challenger is routed; a running scoring query applies it at its next batch."""
    from driftline.scoring import set_routing

    uc = load_usecase(usecase)
    new = set_routing(_spark(ctx), ctx.platform, uc, mode, share)
    click.echo(f"{uc.name}-model: routing {new.mode}" + (f", canary share {new.share:g}" if new.mode == "canary" else ""))


COMMANDS = (models, promote, rollback, route)
