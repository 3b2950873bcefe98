"""``driftline run``: the closed loop as one long-running Spark application
(:mod:`driftline.pipelines.loop`, submitted with ``./spark-submit.sh streaming/loop.py``)."""

from __future__ import annotations

import os

import click

from driftline.cli.context import Context, pass_ctx
from driftline.config import PROJECT_ROOT, load_usecase


@click.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml) or a path to its YAML.")
@click.option("--until", type=click.Choice(["settled"]),
              help="Stop once a challenger that entered shadow during this run is promoted or retired.")
@click.option("--timeout-s", type=float, help="Stop after this many seconds (exit 4 with --until).")
@click.option("--monitor-trigger", default="10 seconds", show_default=True, help="Trigger of the monitor queries.")
@click.option("--status-file", type=click.Path(dir_okay=False), help="Write a JSON status snapshot here.")
@pass_ctx
def run(ctx: Context, usecase: str, until: str | None, timeout_s: float | None, monitor_trigger: str,
        status_file: str | None) -> None:
    """Run the closed loop until stopped: online scoring, the monitor (which raises drift
    alerts), retraining on each alert (the challenger goes to shadow) and progressive
    delivery (shadow → canary steps → champion, or retired when a guardrail trips).

    Needs a champion (train one with ./spark-submit.sh jobs/pipeline.py --usecase X --once).
    Ctrl-C stops it cleanly; the checkpoints resume where it stopped. The same as
    ./spark-submit.sh streaming/loop.py --usecase X.
    """
    load_usecase(usecase)  # a bad use case fails here, before a JVM starts
    args = [str(PROJECT_ROOT / "spark-submit.sh"), "streaming/loop.py", "--usecase", usecase,
            "--monitor-trigger", monitor_trigger]
    if until:
        args += ["--until", until]
    if timeout_s is not None:
        args += ["--timeout-s", str(timeout_s)]
    if status_file:
        args += ["--status-file", status_file]
    if ctx.conf:
        args += ["--conf", ctx.conf]
    for item in ctx.overrides:
        args += ["--set", item]
    os.chdir(PROJECT_ROOT)
    os.execv(args[0], args)  # Ctrl-C and SIGTERM go to the Spark driver itself


COMMANDS = (run,)
