"""What every ``driftline`` command shares: the :class:`Context` the root group builds
from the global options, the ``pass_ctx`` decorator that hands it to a command, and
:class:`DriftlineGroup`, which turns driftline's own errors into one line on stderr.

Command modules import from here, never from :mod:`driftline.cli` itself::

    @click.command("models")
    @pass_ctx
    def models(ctx: Context) -> None:
        ctx.platform.kafka.bootstrap
"""

from __future__ import annotations

import sys
from typing import Any

import click

from driftline.config import PlatformConfig, load_platform
from driftline.errors import DriftlineError


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


class DriftlineGroup(click.Group):
    """Turns driftline's own errors into one clear line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DriftlineError as e:
            click.echo(f"driftline: error: {e}", err=True)
            sys.exit(2)
