"""``driftline demo``: the end-to-end demo and the smoke path (see :mod:`driftline.demo`)."""

from __future__ import annotations

import click

from driftline.cli.context import Context, pass_ctx


@click.command()
@click.option("--usecase", default="fraud", show_default=True, help="Use case to run.")
@click.option("--events", type=int, default=None,
              help="How many events to publish [20000; 10000 with --smoke].")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--smoke", is_flag=True, help="Only the smoke path: Kafka -> Structured Streaming -> Delta.")
@click.option("--keep-broker", is_flag=True, help="Leave the embedded broker running afterwards.")
@pass_ctx
def demo(ctx: Context, usecase: str, events: int | None, seed: int, smoke: bool, keep_broker: bool) -> None:
    """Run the end-to-end demo on the embedded defaults and say what it did.

    Starts the embedded Kafka broker (unless bootstrap servers are configured),
    publishes a simulated stream with labels, then submits each batch job with
    ./spark-submit.sh: ingest, validate, build_features, train (MLflow run,
    registry, quality gate) and batch_score; prints the Delta tables it wrote
    and the registered model's aliases and metrics.

    --smoke instead publishes plain JSON events, streams them from Kafka into
    Delta with Structured Streaming (availableNow) and checks the table with an
    independent Delta reader (delta-rs).
    """
    from driftline.demo import run_demo, run_smoke

    if smoke:
        run_smoke(ctx.platform, events=events or 10_000, keep_broker=keep_broker, echo=click.echo)
    else:
        run_demo(ctx.platform, usecase=usecase, events=events or 20_000, seed=seed, overrides=ctx.overrides,
                 keep_broker=keep_broker, echo=click.echo)
