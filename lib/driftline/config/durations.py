"""The one duration parser: ``250ms``, ``30s``, ``5m``, ``1.5h``, ``2d``, a plain number of
seconds and, where Spark's own interval words are used (triggers), ``10 minutes``.

    parse_duration("5m")                              # 300.0
    parse_duration("10 minutes", words=True)          # 600.0
    whole_seconds("1h", key="drift.window")           # 3600
"""

from __future__ import annotations

import math
import re

from driftline.errors import ConfigError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
WORDS = {
    "millisecond": "ms", "milliseconds": "ms", "second": "s", "seconds": "s", "minute": "m", "minutes": "m",
    "hour": "h", "hours": "h", "day": "d", "days": "d",
}
_COMPACT = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?")
_SPACED = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)?")


def parse_duration(text: str | float | int, *, words: bool = False) -> float:
    """Seconds in ``text``; raises ``ValueError`` naming what it got.

    With ``words`` the units may also be spelled like Spark intervals (``5 seconds``).
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0 or not math.isfinite(text):
            raise ConfigError(f"duration: expected a non-negative number of seconds, got {text!r}")
        return float(text)
    raw = str(text).strip().lower().replace("_", "")
    match = (_SPACED if words else _COMPACT).fullmatch(raw)
    unit = (match["unit"] or "s") if match else None
    if words and unit is not None:
        unit = WORDS.get(unit, unit)
    if match is None or unit not in UNITS:
        expected = "e.g. 250ms, 30s, 5m, 1.5h, 2d" + (" or '10 seconds'" if words else "")
        raise ConfigError(f"duration: got {text!r}, expected {expected}")
    return float(match["num"]) * UNITS[unit]


def whole_seconds(text: str, *, key: str, allow_zero: bool = False, words: bool = False) -> int:
    """A duration that must be a whole number of seconds (positive unless ``allow_zero``);
    a :class:`ConfigError` names ``key``."""
    try:
        value = parse_duration(text, words=words)
    except ValueError as e:
        raise ConfigError(f"{key}: got {text!r}, expected a duration such as 30s, 1m or 1h") from e
    if value != int(value) or (value <= 0 and not allow_zero):
        raise ConfigError(f"{key}: got {text!r}, expected a whole, positive number of seconds")
    return int(value)


def trigger_options(trigger: str) -> dict[str, object]:
    """Turn ``availableNow``, ``once`` or an interval like ``10 seconds`` into
    keyword arguments for ``DataStreamWriter.trigger``."""
    if trigger == "availableNow":
        return {"availableNow": True}
    if trigger == "once":
        return {"once": True}
    if not trigger.strip():
        raise ConfigError("trigger: expected 'availableNow', 'once' or an interval such as '10 seconds'")
    try:
        parse_duration(trigger, words=True)
    except ValueError as e:
        raise ConfigError(f"trigger: got {trigger!r}, expected 'availableNow', 'once' or an interval "
                          "such as '10 seconds'") from e
    return {"processingTime": trigger}
