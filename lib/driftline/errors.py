"""The one exception hierarchy every driftline module raises from.

Everything driftline raises on purpose derives from :class:`DriftlineError`, so an
entry point needs one ``except DriftlineError`` to turn it into a message and an
exit code. Each class also keeps the builtin base it always had (``ValueError``
for bad input, ``RuntimeError`` for a state the platform cannot work in), so
callers that catch the builtin keep working::

    DriftlineError
    ├── ConfigError (ValueError)          a configuration value is wrong
    │   ├── ModelSpecError                the ``model:`` section is wrong
    │   └── SimulationError               a scenario or simulator option is wrong
    ├── UsageError (ValueError)           a library function got a bad argument
    ├── TrainingDataError (ValueError)    the training data is unusable
    │   └── MissingColumnsError           ... because it lacks columns
    ├── BrokerError (RuntimeError)        the Kafka broker is unreachable or failed
    ├── SetupError (RuntimeError)         ``make setup`` prerequisites are missing
    ├── MissingTableError (RuntimeError)  an input Delta table does not exist yet
    ├── DataQualityError (RuntimeError)   a run broke a ``validation:`` error limit
    ├── RegistryError (RuntimeError)      a model-registry operation cannot be done
    └── MonitorError (RuntimeError)       the streaming monitor cannot run
"""

from __future__ import annotations


class DriftlineError(Exception):
    """Base class: anything driftline raises on purpose derives from this."""


# --------------------------------------------------------------------------- bad input (ValueError)


class ConfigError(DriftlineError, ValueError):
    """A configuration key is unknown, missing or has a value of the wrong kind."""


class ModelSpecError(ConfigError):
    """The ``model:`` section of a use case is invalid."""


class UsageError(DriftlineError, ValueError):
    """A library function was called with a bad argument (an empty path, an unknown mode, ...)."""


class SimulationError(ConfigError):
    """A scenario spec, simulator option or generator argument is invalid."""


class TrainingDataError(DriftlineError, ValueError):
    """The training data is unusable: not a Delta table, no commits, an empty split."""


class MissingColumnsError(TrainingDataError):
    """The training table lacks columns the ``model:`` section or the use case needs."""


# --------------------------------------------------------------------------- platform state (RuntimeError)


class BrokerError(DriftlineError, RuntimeError):
    """The embedded Kafka broker could not be started, reached or stopped."""


class SetupError(DriftlineError, RuntimeError):
    """A prerequisite installed by ``make setup`` (jars, Java) is missing."""


class MissingTableError(DriftlineError, RuntimeError):
    """An input Delta table a job needs does not exist yet."""


class DataQualityError(DriftlineError, RuntimeError):
    """A run's data broke an error threshold of the ``validation:`` section."""


class RegistryError(DriftlineError, RuntimeError):
    """A registry operation cannot be done (no such version, no previous champion, ...)."""


class MonitorError(DriftlineError, RuntimeError):
    """The monitor cannot run (no reference profile, no input table, ...)."""
