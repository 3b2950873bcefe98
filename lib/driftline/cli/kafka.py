"""``driftline kafka start | stop | status`` and ``driftline topics create``.

    driftline kafka start | stop | status     the embedded Apache Kafka broker
    driftline topics create --usecase fraud   create a use case's topics
"""

from __future__ import annotations

import json
import sys

import click

from driftline.cli.context import Context, pass_ctx
from driftline.kafka.broker import EmbeddedBroker


@click.group()
def kafka() -> None:
    """Run the embedded Apache Kafka broker (KRaft, one node, loopback).

    Its data and logs live under kafka.embedded.home (.driftline/kafka). When
    kafka.bootstrap_servers is set, driftline uses that cluster instead and
    these commands are not needed.
    """


def _broker(ctx: Context) -> EmbeddedBroker:
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


@click.group()
def topics() -> None:
    """Manage the Kafka topics of a use case."""


@topics.command("create")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@pass_ctx
def topics_create(ctx: Context, usecase: str) -> None:
    """Create <uc>.events, .labels, .predictions, .alerts and .dlq if missing."""
    from driftline.config import load_usecase
    from driftline.kafka.clients import ensure_topics

    uc = load_usecase(usecase)
    names = [uc.topic(k) for k in ("events", "labels", "predictions", "alerts", "dlq")]
    created = ensure_topics(ctx.platform.kafka, names)
    click.echo(f"topics: {', '.join(names)} ({len(created)} created)")


COMMANDS = (kafka, topics)
