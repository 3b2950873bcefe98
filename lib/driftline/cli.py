"""The ``driftline`` command line.

    driftline kafka start | stop | status     the embedded Apache Kafka broker
    driftline topics create --usecase fraud   create a use case's topics
    driftline demo                            the end-to-end smoke path

Global options come before the command: ``--conf`` picks another platform.yaml,
``--set key=value`` overrides any configuration key (repeatable).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from driftline.config import PlatformConfig, load_platform
from driftline.errors import DriftlineError

log = logging.getLogger("driftline")


class Context:
    """What the group callback parsed, handed to every command."""

    def __init__(self, conf: str | None, overrides: tuple[str, ...]) -> None:
        self.conf = conf
        self.overrides = overrides
        self._platform: PlatformConfig | None = None

    @property
    def platform(self) -> PlatformConfig:
        if self._platform is None:
            self._platform = load_platform(self.conf, self.overrides)
        return self._platform


pass_ctx = click.make_pass_decorator(Context)


class _Group(click.Group):
    """Turns driftline's own errors into one clear line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DriftlineError as e:
            click.echo(f"driftline: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--conf", type=click.Path(dir_okay=False), help="platform.yaml to use [conf/platform.yaml].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set kafka.embedded.port=19092 (repeatable).")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, conf: str | None, overrides: tuple[str, ...], verbose: int) -> None:
    """driftline: Spark + Kafka streaming platform for the ML lifecycle."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("driftline").setLevel(min(level, logging.INFO))
    ctx.obj = Context(conf, overrides)


@main.group()
def kafka() -> None:
    """Run the embedded Apache Kafka broker (KRaft, one node, loopback).

    Its data and logs live under kafka.embedded.home (.driftline/kafka). When
    kafka.bootstrap_servers is set, driftline uses that cluster instead and
    these commands are not needed.
    """


def _broker(ctx: Context):  # type: ignore[no-untyped-def]
    from driftline.kafka_local import EmbeddedBroker

    return EmbeddedBroker.from_config(ctx.platform)


@kafka.command("start")
@pass_ctx
def kafka_start(ctx: Context) -> None:
    """Start the broker (formats storage on first start) and wait until it is ready."""
    if not ctx.platform.kafka.uses_embedded:
        click.echo(f"kafka.bootstrap_servers is {ctx.platform.kafka.bootstrap}: nothing to start")
        return
    broker = _broker(ctx).start()
    click.echo(f"Kafka broker ready at {broker.bootstrap} (pid {broker.pid()}, logs {broker.log_dir})")


@kafka.command("stop")
@pass_ctx
def kafka_stop(ctx: Context) -> None:
    """Stop the broker cleanly."""
    stopped = _broker(ctx).stop()
    click.echo("Kafka broker stopped" if stopped else "Kafka broker was not running")


@kafka.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_ctx
def kafka_status(ctx: Context, as_json: bool) -> None:
    """Say whether the broker runs; exit code 1 when it does not."""
    status = _broker(ctx).status()
    if as_json:
        click.echo(json.dumps(status))
    else:
        state = "running" if status["running"] else "stopped"
        click.echo(f"Kafka broker {state} at {status['bootstrap']} (pid {status['pid']}, home {status['home']})")
    sys.exit(0 if status["running"] else 1)


@main.group()
def topics() -> None:
    """Manage the Kafka topics of a use case."""


@topics.command("create")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@pass_ctx
def topics_create(ctx: Context, usecase: str) -> None:
    """Create <uc>.events, .labels, .predictions, .alerts and .dlq if missing."""
    from driftline.config import load_usecase
    from driftline.kafka_io import ensure_topics

    uc = load_usecase(usecase)
    names = [uc.topic(k) for k in ("events", "labels", "predictions", "alerts", "dlq")]
    created = ensure_topics(ctx.platform.kafka, names)
    click.echo(f"topics: {', '.join(names)} ({len(created)} created)")


@main.command()
@click.option("--usecase", default="fraud", show_default=True, help="Use case to run.")
@click.option("--events", type=int, default=None,
              help="How many events to publish [20000; 10000 with --smoke].")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--smoke", is_flag=True, help="Only the smoke path: Kafka -> Structured Streaming -> Delta.")
@click.option("--keep-broker", is_flag=True, help="Leave the embedded broker running afterwards.")
@click.pass_context
def demo(click_ctx: click.Context, usecase: str, events: int | None, seed: int, smoke: bool,
         keep_broker: bool) -> None:
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

    ctx: Context = click_ctx.obj
    if smoke:
        run_smoke(ctx.platform, events=events or 10_000, keep_broker=keep_broker, echo=click.echo)
    else:
        run_demo(ctx.platform, usecase=usecase, events=events or 20_000, seed=seed, overrides=ctx.overrides,
                 keep_broker=keep_broker, echo=click.echo)


# Model registry commands (issue 5): promote, rollback, models.
from driftline.cli_models import COMMANDS as _MODEL_COMMANDS  # noqa: E402

for _command in _MODEL_COMMANDS:
    main.add_command(_command)

# Event simulator and producer (issue 3): simulate history, produce.
from driftline.cli_simulate import produce, simulate  # noqa: E402

main.add_command(simulate)
main.add_command(produce)

# Query metrics and drift alerts (issue 7): queries, alerts check | list.
from driftline.cli_monitoring import COMMANDS as _MONITORING_COMMANDS  # noqa: E402

for _command in _MONITORING_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
