"""The ``driftline`` command line.

    driftline kafka start | stop | status     the embedded Apache Kafka broker
    driftline topics create --usecase fraud   create a use case's topics
    driftline demo                            the end-to-end smoke path
    driftline simulate history | produce      simulated events to files or Kafka
    driftline models | promote | rollback | route | deliver
                                              the model registry
    driftline models card | vacuum            a version's model card; VACUUM keeping registered data
    driftline queries | alerts check | list   query metrics and drift alerts
    driftline report --usecase fraud          one self-contained HTML report of a use case
    driftline run --usecase fraud             the closed loop: score, monitor, retrain, deliver
    driftline usecase check | init            check a use case, or draft one from samples

Global options come before the command: ``--conf`` picks another platform.yaml,
``--set key=value`` overrides any configuration key (repeatable).

One module per group of commands (:mod:`.kafka`, :mod:`.demo`, :mod:`.simulate`,
:mod:`.models`, :mod:`.monitoring`, :mod:`.usecase`, :mod:`.report`, :mod:`.loop`); each takes :class:`~driftline.cli.context.Context`
from :mod:`.context` and exposes ``COMMANDS``, which this module adds to :func:`main`.
"""

from __future__ import annotations

import logging

import click

from driftline.cli import demo, kafka, loop, models, monitoring, report, simulate, usecase
from driftline.cli.context import Context, DriftlineGroup

__all__ = ["main"]


@click.group(cls=DriftlineGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    # kafka-python (topic administration) logs every connection retry; driftline reports the outcome
    logging.getLogger("kafka").setLevel(logging.CRITICAL if verbose == 0 else logging.WARNING if verbose == 1 else level)
    ctx.obj = Context(conf, overrides)


for _command in (*kafka.COMMANDS, demo.demo, *simulate.COMMANDS, *models.COMMANDS, *monitoring.COMMANDS,
                 *usecase.COMMANDS, *report.COMMANDS, *loop.COMMANDS):
    main.add_command(_command)
