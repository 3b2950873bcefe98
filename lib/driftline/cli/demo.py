"""``driftline demo``: the end-to-end demo and the smoke path (see :mod:`driftline.demo`)."""

from __future__ import annotations

import click

from driftline.cli.context import Context, pass_ctx


@click.command()
@click.option("--usecase", default="fraud", show_default=True, help="Use case to run (fraud or eta, or yours).")
@click.option("--events", type=int, default=None,
              help="History events to publish [24 h of the use case's simulator rate: 48,000 for fraud; "
                   "10,000 with --smoke].")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--live-timeout-s", default=480.0, show_default=True,
              help="Stop the live phase after this long even if the challenger has not been promoted or retired.")
@click.option("--smoke", is_flag=True, help="Only the smoke path: Kafka -> Structured Streaming -> Delta.")
@click.option("--keep-broker", is_flag=True, help="Leave the embedded broker running afterwards.")
@pass_ctx
def demo(ctx: Context, usecase: str, events: int | None, seed: int, live_timeout_s: float, smoke: bool,
         keep_broker: bool) -> None:
    """Run the closed loop live on the embedded defaults and say what it did (about 8 minutes on 2 cores).

    \b
    1 history   24 h of simulated events and labels published to Kafka
    2 batch     ./spark-submit.sh jobs/pipeline.py --once (ingest, validate, features, train,
                gate: the champion)
    3 live      ./spark-submit.sh streaming/loop.py: online scoring, the stream monitor, retraining
                on each alert and progressive delivery, while a live stream is published; two
                hours of event time in, a drift scenario switches on; the monitor raises an
                alert, the pipeline retrains, the challenger goes to shadow, then canary 5%,
                25%, 50%, and is promoted or retired on the evidence (shown as it happens)
    4 summary   read back from the Delta tables (delta-rs) and the MLflow registry
    5 report    the HTML report's path, and the MLflow UI command

    The demo runs on a copy of the use case (written next to the lake, under .driftline/demo/)
    with a drift window the simulator's rate can fill, a faster delivery interval and a retrain
    window of the last 5 h of event time; it prints what it changed. The loop pauses the monitor
    while a retrain runs (--pause-monitor), so the retrain gets the cores. --smoke instead streams plain JSON events from Kafka into Delta
    (availableNow) and checks the table with an independent Delta reader (delta-rs).
    """
    from driftline.demo import run_demo, run_smoke

    if smoke:
        run_smoke(ctx.platform, events=events or 10_000, keep_broker=keep_broker, echo=click.echo)
    else:
        run_demo(ctx.platform, usecase=usecase, events=events, seed=seed, overrides=ctx.overrides,
                 keep_broker=keep_broker, echo=click.echo, live_timeout_s=live_timeout_s)
