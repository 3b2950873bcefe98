"""``driftline promote | rollback | models | route | deliver``: the model registry from the command line.

    driftline models --usecase fraud                  versions, aliases, test metrics
    driftline models card --usecase fraud [--version 3]
                                                      a version's model card (default: the champion's)
    driftline vacuum --usecase fraud [--dry-run]      VACUUM the training table, keeping every version
                                                      a registered model version was trained on
    driftline promote --usecase fraud                 the challenger, through the quality gate
    driftline promote --usecase fraud --version 3 --force
    driftline rollback --usecase fraud                champion back to the version it replaced
    driftline route --usecase fraud --mode canary --share 0.25
                                                      how the challenger takes part in online scoring
    driftline deliver --usecase fraud [--watch]       progressive delivery: one step on live evidence

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


@click.group("models", invoke_without_command=True)
@click.option("--usecase", help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@click.pass_context
def models(click_ctx: click.Context, usecase: str | None, as_json: bool) -> None:
    """List the versions of <uc>-model with their aliases and test metrics
    (`driftline models card` prints a version's model card)."""
    from driftline.registry import format_versions, list_versions, model_name

    if click_ctx.invoked_subcommand is not None:
        return
    if not usecase:
        raise click.UsageError("Missing option '--usecase'.")
    ctx = click_ctx.find_object(Context)
    assert ctx is not None
    uc = load_usecase(usecase)
    rows = list_versions(ctx.platform, uc)
    if as_json:
        click.echo(json.dumps(rows, default=str))
    elif not rows:
        click.echo(f"{model_name(uc)}: no versions registered")
    else:
        click.echo(format_versions(rows))


@models.command("card")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--version", type=int, default=None, help="Model version [the champion, else the newest].")
@click.option("--json", "as_json", is_flag=True, help="Print model_card.json instead of the Markdown.")
@pass_ctx
def card(ctx: Context, usecase: str, version: int | None, as_json: bool) -> None:
    """Print the model card of a registered version (written into its MLflow run at registration)."""
    from driftline.model_card import load_model_card, render_markdown
    from driftline.registry import model_name

    uc = load_usecase(usecase)
    got = load_model_card(ctx.platform, uc, version)
    if got is None:
        click.echo(f"{model_name(uc)}: version {version or 'champion'} has no model card (registered before cards "
                   "existed); retrain to get one", err=True)
        raise SystemExit(1)
    click.echo(json.dumps(got, indent=2, default=str) if as_json else render_markdown(got))


@click.command("vacuum")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--dry-run", is_flag=True, help="Only count the files that would go; change nothing.")
@pass_ctx
def vacuum(ctx: Context, usecase: str, dry_run: bool) -> None:
    """VACUUM the training tables, keeping every version a registered model version was trained on."""
    from driftline.retention import format_vacuum
    from driftline.retention import vacuum as do_vacuum

    uc = load_usecase(usecase)
    click.echo(format_vacuum(do_vacuum(_spark(ctx), ctx.platform, uc, dry_run=dry_run), dry_run))


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


@click.command("deliver")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--watch", is_flag=True,
              help="Repeat every delivery.interval until the challenger is promoted or retired.")
@click.option("--json", "as_json", is_flag=True, help="Print each decision as one JSON line.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="With --watch: stop after this many steps.")
@pass_ctx
def deliver(ctx: Context, usecase: str, watch: bool, as_json: bool, max_steps: int | None) -> None:
    """One step of progressive delivery for the challenger, on live evidence.

    \b
    Stages: shadow (scored next to the champion, never served) -> canary at each of
    delivery.steps (that share of entities served by the challenger; both models still
    score every event) -> champion. At each stage a one-sided non-inferiority test
    (delivery.test: delong for binary labels, paired_abs_error for regression, or a
    seeded bootstrap) on the labelled events both models scored since the stage started
    says whether the challenger is not worse than the champion by delivery.margin; its
    error rate is delivery.alpha however often this runs (look k uses the first
    min_labels * 2^(k-1) labelled events at alpha / 2^k).

    \b
    hold     not enough labelled events or positives yet (it says how many), or inconclusive
    advance  not worse: to the next canary share (audit "ramp", with the evidence)
    promote  not worse at the last step: champion (audit "promote")
    retire   a guardrail tripped (metric drop, null predictions, quarantines, latency) or
             significantly worse: routing back to champion only, challenger alias removed
             (audit "retire")

    Every evaluation goes to monitoring/<uc>_delivery. `driftline route` overrides by hand;
    delivery continues from the routing in effect. Exit code 0; with --watch, 0 when
    promoted, 3 when retired.
    """
    import time

    from driftline.delivery import step, to_json

    uc = load_usecase(usecase)
    spark = _spark(ctx)
    done = 0
    while True:
        decision = step(spark, ctx.platform, uc)
        done += 1
        click.echo(to_json(decision) if as_json else decision.describe())
        final = decision.action in ("promote", "retire", "idle")
        if not watch or final or (max_steps is not None and done >= max_steps):
            if watch and decision.action == "retire":
                raise SystemExit(3)
            return
        time.sleep(uc.delivery.interval_s)


COMMANDS = (models, promote, rollback, route, deliver, vacuum)
