"""What every configuration section shares: a strict base model and one error formatter."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from driftline.errors import ConfigError


class Strict(BaseModel):
    """A frozen section that rejects unknown keys: a typo fails at load, naming the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_hash(data: Mapping[str, Any]) -> str:
    """A short, order-independent SHA-256 of a JSON-able mapping."""
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_UNION_TAG = re.compile(r"^[A-Z][A-Za-z0-9]+$|[\[(]")
_TYPE_ERRORS = {"list_type", "dict_type", "model_type", "model_attributes_type"}


def _location(loc: tuple[Any, ...]) -> str:
    # pydantic names the member of a union it tried ("list[any]", "RangeSpec"): not a key of the YAML
    parts = [p for p in loc if not (isinstance(p, str) and _UNION_TAG.search(p))]
    return ".".join("schema" if p == "schema_" else str(p) for p in parts)


def _union_losers(errors: list[Any]) -> set[int]:
    """Errors of a union member whose type did not match, when another member got further."""
    locs = [_location(e["loc"]) for e in errors]
    return {i for i, e in enumerate(errors) if e["type"] in _TYPE_ERRORS and len(e["loc"]) != len(locs[i].split("."))
            and any(j != i and (locs[j] == locs[i] or locs[j].startswith(locs[i] + ".")) for j in range(len(errors)))}


def describe_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, each naming the dotted key, the value and what was expected.

    Example::

        describe_errors(e, "drift.alert")  # ["drift.alert.m: got 0, expected: Input should be ..."]
    """
    lines = []
    errors = err.errors()
    losers = _union_losers(errors)
    for i, e in enumerate(errors):
        if i in losers:
            continue
        key = ".".join(p for p in (prefix, _location(e["loc"])) if p)
        kind = e["type"]
        if kind == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {e['input']!r}); check the spelling")
        elif kind == "missing":
            lines.append(f"{key}: required key is missing")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            lines.append(f"{key}: got {e['input']!r}, expected a mapping")
        elif kind == "value_error":
            lines.append(f"{key}: {str(e['msg']).removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: got {e['input']!r}, expected: {e['msg']}")
    return lines


def section_error(
    source: str, err: ValidationError, prefix: str = "", cls: type[ConfigError] = ConfigError
) -> ConfigError:
    """A :class:`ConfigError` (or ``cls``) listing every problem of ``err``, prefixed by ``source``."""
    return cls(f"{source}: " + "; ".join(describe_errors(err, prefix)))
