"""The small exception hierarchy every driftline module raises from."""

from __future__ import annotations


class DriftlineError(Exception):
    """Base class: anything driftline raises on purpose derives from this."""


class ConfigError(DriftlineError, ValueError):
    """A configuration key is unknown, missing or has a value of the wrong kind."""


class BrokerError(DriftlineError, RuntimeError):
    """The embedded Kafka broker could not be started, reached or stopped."""


class SetupError(DriftlineError, RuntimeError):
    """A prerequisite installed by ``make setup`` (jars, Java) is missing."""
