"""Seeded, vectorised event simulators with switchable drift and data-quality scenarios.

A use case's ``simulator:`` section names a generator (``card_transactions``,
``delivery_orders``); the generator turns it into an endless, reproducible stream
of events and of the labels that follow them ``label.delay_s`` later::

    uc = load_usecase("fraud")
    gen = make_generator(uc, seed=7, scenarios=[parse_scenario("covariate_shift@1h:factor=3")])
    chunk = gen.next_chunk()             # 10,000 events as a DataFrame, their labels alongside
    payloads = gen.encode_events(chunk)  # compact JSON bytes with sorted keys, one per event
    gen.ground_truth()                   # when each scenario started, how many events it touched

The same seed, options, start time, rate and chunk size give byte-identical payloads:
all randomness comes from ``numpy.random.Generator(PCG64(seed))`` and event
times are offsets from a configured start time, never the wall clock.

Scenario specs (command line ``--scenario``) read ``NAME[@START[..END]][:KEY=VALUE,...]``:

* ``START``/``END`` is an event count (``10000``) or a simulated-time offset from the
  start (``30s``, ``5m``, ``1.5h``, ``2d``); no ``@`` means from the first event, no
  ``..END`` means until the end of the run.
* Parameters are comma separated; lists use ``+`` (``kinds=not_json+oversized``).

Examples: ``covariate_shift@30s:factor=3``, ``malformed@10000:rate=0.05``,
``prior_shift@2h..4h:rate=0.05``. :func:`scenario_help` lists every scenario with its
parameters and defaults.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from numpy.random import PCG64, Generator

from driftline.config import FieldSpec, UseCaseConfig
from driftline.config import parse_duration as config_duration
from driftline.errors import SimulationError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_START = "2024-01-01T00:00:00Z"
MALFORMED_KINDS = ("not_json", "wrong_type", "missing_field", "oversized")
META_COLUMNS = ("_index", "_malformed", "_variant", "_pad", "_duplicate_of", "_late_ms")

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


# -- scenario specs ----------------------------------------------------------------


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``'250ms'``, ``'30s'``, ``'5m'``, ``'1.5h'``, ``'2d'`` or a plain number of seconds
    (:func:`driftline.config.parse_duration`, raising :class:`SimulationError`).

    Example::

        parse_duration("5m")   # 300.0
    """
    try:
        return config_duration(text)
    except ValueError as e:
        raise SimulationError(str(e)) from e


def _parse_when(text: str, spec: str) -> tuple[float | None, int | None]:
    """``'10000'`` -> (None, 10000) events; ``'30s'`` -> (30.0, None) simulated seconds."""
    text = text.strip().replace("_", "")
    if re.fullmatch(r"\d+", text):
        return None, int(text)
    try:
        return parse_duration(text), None
    except SimulationError as e:
        raise SimulationError(
            f"scenario {spec!r}: {text!r} is neither an event count (10000) nor a time offset (30s, 5m, 2h, 1d)"
        ) from e


@dataclass(frozen=True)
class Scenario:
    """One scenario switched on at ``start_s`` (simulated seconds) or ``start_event``.

    Build it with :func:`parse_scenario`; ``params`` holds the raw values, which the
    generator checks against the scenario's declared parameters.
    """

    name: str
    params: Mapping[str, str] = field(default_factory=dict)
    start_s: float | None = None
    start_event: int | None = None
    end_s: float | None = None
    end_event: int | None = None
    spec: str = ""


def parse_scenario(spec: str) -> Scenario:
    """Parse ``NAME[@START[..END]][:KEY=VALUE,...]`` (see the module docstring).

    Example::

        parse_scenario("covariate_shift@30s:factor=3")
        # Scenario(name='covariate_shift', params={'factor': '3'}, start_s=30.0, ...)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SimulationError("scenario: expected a spec such as covariate_shift@30s:factor=3")
    spec = spec.strip()
    head, _, raw_params = spec.partition(":")
    name, has_at, when = head.partition("@")
    name = name.strip()
    if not _NAME_RE.fullmatch(name):
        raise SimulationError(f"scenario {spec!r}: {name!r} is not a scenario name, expected e.g. covariate_shift")
    start_s: float | None = None
    start_event: int | None = 0
    end_s: float | None = None
    end_event: int | None = None
    if has_at:
        start_text, has_end, end_text = when.partition("..")
        if start_text.strip():
            start_s, start_event = _parse_when(start_text, spec)
        if has_end:
            if not end_text.strip():
                raise SimulationError(f"scenario {spec!r}: nothing after '..', expected an end such as 90s")
            end_s, end_event = _parse_when(end_text, spec)
    params: dict[str, str] = {}
    if raw_params.strip():
        for item in raw_params.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise SimulationError(f"scenario {spec!r}: parameter {item!r} is not KEY=VALUE")
            params[key.strip()] = value.strip()
    return Scenario(name, params, start_s, start_event, end_s, end_event, spec)


@dataclass(frozen=True)
class ParamSpec:
    """A scenario parameter: its default, its kind and one line of help."""

    default: Any
    help: str
    kind: Literal["float", "int", "str", "duration", "kinds"] = "float"
    low: float | None = None
    high: float | None = None

    def convert(self, raw: Any, where: str) -> Any:
        """Turn a raw (string) value into this parameter's kind, or raise SimulationError naming it."""
        try:
            if self.kind == "str":
                value: Any = str(raw)
            elif self.kind == "int":
                value = int(str(raw).replace("_", ""))
            elif self.kind == "duration":
                value = parse_duration(raw)
            elif self.kind == "kinds":
                parts = tuple(raw) if isinstance(raw, tuple | list) else tuple(p for p in str(raw).split("+") if p)
                unknown = [p for p in parts if p not in MALFORMED_KINDS]
                if unknown or not parts:
                    raise ValueError(f"expected some of {'+'.join(MALFORMED_KINDS)}")
                value = parts
            else:
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError("expected a finite number")
        except (TypeError, ValueError) as e:
            raise SimulationError(f"{where}: got {raw!r}, expected {self.kind} ({e})") from e
        if isinstance(value, float | int) and (
            (self.low is not None and value < self.low) or (self.high is not None and value > self.high)
        ):
            raise SimulationError(f"{where}: got {raw!r}, expected a value in [{self.low}, {self.high}]")
        return value


def _rate(default: float, what: str) -> ParamSpec:
    return ParamSpec(default, what, "float", 0.0, 1.0)


# Scenarios every generator supports; their column defaults come from the generator.
GENERIC_SCENARIOS: dict[str, tuple[str, dict[str, ParamSpec]]] = {
    "new_category": (
        "an unseen value appears in a string column",
        {"column": ParamSpec(None, "string column", "str"), "value": ParamSpec(None, "the new value", "str"),
         "share": _rate(0.1, "fraction of events that get it")},
    ),
    "missing_spike": (
        "a column's values become null",
        {"column": ParamSpec(None, "column to null", "str"), "rate": _rate(0.3, "fraction of events nulled")},
    ),
    "malformed": (
        "events that are not JSON, have a wrong type, miss a required field or are oversized",
        {"rate": _rate(0.05, "fraction of events broken"),
         "kinds": ParamSpec(MALFORMED_KINDS, "kinds to mix evenly, joined by +", "kinds"),
         "size": ParamSpec(100_000, "oversized events are longer than this many bytes", "int", 1, 900_000)},
    ),
    "duplicates": (
        "earlier events are sent again with the same id (and the same bytes)",
        {"rate": _rate(0.02, "fraction of slots that repeat an earlier event"),
         "window": ParamSpec(1000, "repeat one of the last N events", "int", 1, 1_000_000)},
    ),
    "late": (
        "event times lag behind arrival (out of order)",
        {"rate": _rate(0.1, "fraction of events that arrive late"),
         "lag": ParamSpec(600.0, "mean lag (exponential), e.g. 10m", "duration", 0.001)},
    ),
}


# -- JSON encoding -----------------------------------------------------------------


def _plain_strings(values: np.ndarray) -> list[str] | None:
    """The values as a list when every one is a printable-ASCII string without quotes or
    backslashes (so it can go between quotes as is), else None."""
    try:
        joined = "".join(values)
    except TypeError:  # a null or a non-string
        return None
    if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return values.tolist()
    return None


def _string_fragments(values: np.ndarray) -> list[str]:
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    encoded = [json.dumps(u if isinstance(u, str) else str(u)) for u in uniques]
    table = np.array([*encoded, "null"], dtype=object)
    return table[codes].tolist()  # code -1 (null) picks the trailing "null"


def _number_fragments(values: np.ndarray, integral: bool) -> list[str]:
    arr = values if values.dtype.kind in "iuf" else pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
    if integral and arr.dtype.kind in "iu":
        return list(map(str, arr.tolist()))
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if finite.all():
        return list(map(str, arr.astype(np.int64).tolist())) if integral else list(map(float.__repr__, arr.tolist()))
    text = np.where(finite, arr, 0).astype(np.int64).astype(str) if integral else np.where(finite, arr, 0.0).astype(str)
    out = text.astype(object)
    out[~finite] = "null"
    return out.tolist()


def _timestamps(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        ts = values.astype("datetime64[ms]")
    else:
        ts = pd.to_datetime(pd.Series(values), utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    return np.datetime_as_string(ts, unit="ms", timezone="UTC")


def _column(values: np.ndarray, kind: str) -> tuple[list[str], bool]:
    """JSON text of each value of one column, by schema type; the flag says the text
    still needs surrounding quotes (plain strings, which the row template adds)."""
    if kind == "string":
        plain = _plain_strings(values)
        return (plain, True) if plain is not None else (_string_fragments(values), False)
    if kind in ("double", "int", "long"):
        return _number_fragments(values, integral=kind != "double"), False
    if kind == "boolean":
        if values.dtype == np.bool_:
            return np.where(values, "true", "false").tolist(), False
        series = pd.Series(values, dtype=object)
        nulls = series.isna().to_numpy()
        out = np.where(series.where(~nulls, False).astype(bool).to_numpy(), "true", "false").astype(object)
        out[nulls] = "null"
        return out.tolist(), False
    if kind == "timestamp":
        text = _timestamps(values)
        nat = text == "NaT"
        if not nat.any():
            return text.tolist(), True
        return ['"%s"' % t if t != "NaT" else "null" for t in text.tolist()], False  # noqa: UP031
    raise SimulationError(f"kind: unknown schema type {kind!r}")


def _wrong_type(kind: str, variant: int) -> str:
    if kind in ("double", "int", "long"):
        return '"n/a"'
    if kind == "timestamp":
        return str(1_700_000_000_000 + variant)  # epoch millis: a number where text is expected
    if kind == "boolean":
        return '"yes"'
    return str(variant % 1000)  # a number where a string is expected


def encode_json_lines(
    frame: pd.DataFrame,
    fields: Sequence[FieldSpec],
    *,
    event_id: str | None = None,
    oversize_field: str | None = None,
) -> list[bytes]:
    """Compact JSON (sorted keys, no spaces, ASCII) for each row of ``frame``.

    Only the columns named in ``fields`` are written, typed by their schema type.
    Rows whose ``_malformed`` column names a kind are broken on purpose:
    ``not_json`` (truncated text), ``wrong_type`` (one field of the wrong JSON
    type), ``missing_field`` (one required field dropped; never ``event_id``),
    ``oversized`` (``oversize_field`` padded past ``_pad`` bytes). The choice of
    field follows ``_variant``, so the same row always breaks the same way.

    Example::

        encode_json_lines(pd.DataFrame({"a": [1.5], "b": ["x"]}),
                          [FieldSpec(name="b", type="string"), FieldSpec(name="a", type="double")])
        # [b'{"a":1.5,"b":"x"}']
    """
    if not fields:
        raise SimulationError("fields: expected at least one field")
    missing = [f.name for f in fields if f.name not in frame.columns]
    if missing:
        raise SimulationError(f"frame: missing columns {missing}")
    ordered = sorted(fields, key=lambda f: f.name)
    columns: list[list[str]] = []
    quoted: list[bool] = []
    for f in ordered:
        values, needs_quotes = _column(frame[f.name].to_numpy(), f.type)
        columns.append(values)
        quoted.append(needs_quotes)
    template = "{" + ",".join(
        json.dumps(f.name).replace("%", "%%") + (':"%s"' if q else ":%s") for f, q in zip(ordered, quoted, strict=True)
    ) + "}"
    if not len(frame):
        return []
    out = "\n".join(map(template.__mod__, zip(*columns, strict=True))).encode().split(b"\n")
    if "_malformed" not in frame.columns:
        return out
    kinds = frame["_malformed"].to_numpy()
    broken = np.flatnonzero(pd.notna(kinds))
    if len(broken) == 0:
        return out
    variants = frame["_variant"].to_numpy() if "_variant" in frame.columns else np.arange(len(frame))
    pads = frame["_pad"].to_numpy() if "_pad" in frame.columns else np.full(len(frame), 100_000)
    names = [f.name for f in ordered]
    keys = [json.dumps(n) for n in names]
    type_candidates = [i for i, f in enumerate(ordered) if f.name != event_id]
    required = [i for i, f in enumerate(ordered) if f.required and f.name != event_id] or type_candidates
    pad_at = names.index(oversize_field) if oversize_field in names else None
    for row in broken.tolist():
        kind = kinds[row]
        variant = int(variants[row])
        frags = [f'"{col[row]}"' if q else col[row] for col, q in zip(columns, quoted, strict=True)]
        if kind == "not_json":
            out[row] = out[row][: max(1, len(out[row]) // 2)]
            continue
        keep = list(range(len(names)))
        if kind == "wrong_type":
            i = type_candidates[variant % len(type_candidates)]
            frags[i] = _wrong_type(ordered[i].type, variant)
        elif kind == "missing_field":
            keep.remove(required[variant % len(required)])
        elif kind == "oversized":
            i = pad_at if pad_at is not None else type_candidates[0]
            current = json.loads(frags[i])
            text = json.dumps("" if current is None else str(current))
            frags[i] = text[:-1] + "x" * int(pads[row]) + '"'  # padding needs no escaping
        else:
            raise SimulationError(f"_malformed: unknown kind {kind!r}, expected one of {MALFORMED_KINDS}")
        out[row] = ("{" + ",".join(f"{keys[i]}:{frags[i]}" for i in keep) + "}").encode()
    return out


# -- chunks and ground truth -------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """A slice of the stream: events in emission order and the labels of the fresh ones.

    ``events`` has the schema columns plus ``_index`` (emission position),
    ``_malformed`` (kind or None), ``_duplicate_of`` (-1 or the position of the
    original), ``_late_ms`` (how far the event time was moved back) and
    ``_variant``/``_pad`` (how a malformed row is broken). ``arrival_s`` is the
    simulated arrival time (seconds after start); ``labels`` has the event id,
    the label and ``label_time`` plus ``_index``; ``label_release_s`` is the
    simulated time at which each label becomes known.
    """

    start_index: int
    events: pd.DataFrame
    arrival_s: np.ndarray
    labels: pd.DataFrame
    label_release_s: np.ndarray

    def __len__(self) -> int:
        return len(self.events)

    def head(self, n: int) -> Chunk:
        """The first ``n`` events and the labels that belong to them."""
        if n < 0:
            raise SimulationError(f"n: expected a non-negative count, got {n}")
        keep = self.labels["_index"].to_numpy() < self.start_index + n
        return Chunk(
            self.start_index,
            self.events.iloc[:n],
            self.arrival_s[:n],
            self.labels.loc[keep],
            self.label_release_s[keep],
        )


@dataclass(eq=False)
class _ScenarioState:
    scenario: Scenario
    params: dict[str, Any]
    truth: dict[str, Any]
    ordinal: int
    time_of: Callable[[float], str]

    def mask(self, index: np.ndarray, arrival_s: np.ndarray) -> np.ndarray:
        sc = self.scenario
        m = np.ones(len(index), dtype=bool)
        if sc.start_event is not None:
            m &= index >= sc.start_event
        if sc.start_s is not None:
            m &= arrival_s >= sc.start_s
        if sc.end_event is not None:
            m &= index < sc.end_event
        if sc.end_s is not None:
            m &= arrival_s < sc.end_s
        return m


class ActiveScenarios:
    """Which rows of a chunk each scenario covers; passed to a generator's ``_generate``.

    When several scenarios of the same name overlap, the one listed later wins.
    """

    def __init__(self, states: Sequence[_ScenarioState], index: np.ndarray, arrival_s: np.ndarray,
                 rng: Generator) -> None:
        self.n = len(index)
        self.rng = rng
        self.index = index
        self.arrival_s = arrival_s
        self._items: list[tuple[_ScenarioState, np.ndarray]] = []
        self._affected: dict[int, np.ndarray] = {}
        self._kinds: dict[int, dict[str, np.ndarray]] = {}
        taken: dict[str, np.ndarray] = {}
        for state in reversed(states):
            mask = state.mask(index, arrival_s)
            prev = taken.get(state.scenario.name)
            if prev is not None:
                mask &= ~prev
                taken[state.scenario.name] = prev | mask
            else:
                taken[state.scenario.name] = mask.copy()
            if mask.any():
                self._items.append((state, mask))
        self._items.reverse()

    def get(self, name: str) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """``(mask, params)`` of each active scenario called ``name``, in listing order."""
        return [(mask, st.params) for st, mask in self._items if st.scenario.name == name]

    def sample(self, name: str, rate_key: str = "rate") -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Like :meth:`get`, each mask thinned to a random ``params[rate_key]`` share of its rows;
        counts the rows picked as the scenario's affected events."""
        picked = []
        for st, mask in self._items:
            if st.scenario.name != name:
                continue
            sel = mask & (self.rng.random(self.n) < st.params[rate_key])
            self.mark(st, sel)
            picked.append((sel, st.params))
        return picked

    def states(self) -> list[tuple[_ScenarioState, np.ndarray]]:
        return list(self._items)

    def mark(self, state: _ScenarioState, rows: np.ndarray, kind: str | None = None) -> None:
        """Record that ``state`` changed ``rows`` (a mask), optionally as ``kind`` (malformed)."""
        prev = self._affected.get(state.ordinal)
        self._affected[state.ordinal] = rows.copy() if prev is None else prev | rows
        if kind is not None:
            self._kinds.setdefault(state.ordinal, {})[kind] = rows

    def keep_only(self, rows: np.ndarray, unless: str) -> None:
        """Forget the changes recorded outside ``rows`` for every scenario not named ``unless``."""
        for st, _mask in self._items:
            if st.scenario.name == unless:
                continue
            if st.ordinal in self._affected:
                self._affected[st.ordinal] = self._affected[st.ordinal] & rows
            for kind, kmask in self._kinds.get(st.ordinal, {}).items():
                self._kinds[st.ordinal][kind] = kmask & rows

    def fold(self, upto: int | None = None) -> None:
        """Add this chunk's rows before position ``upto`` to each scenario's ground truth."""
        k = self.n if upto is None else max(0, min(self.n, upto))
        for st, mask in self._items:
            rows = np.flatnonzero(mask[:k])
            if not len(rows):
                continue
            truth = st.truth
            if truth["start_index"] is None:
                truth["start_index"] = int(self.index[rows[0]])
                truth["start_time"] = st.time_of(float(self.arrival_s[rows[0]]))
            truth["end_index"] = int(self.index[rows[-1]]) + 1
            truth["active_events"] += len(rows)
            affected = self._affected.get(st.ordinal)
            if affected is not None:
                truth["affected_events"] += int(affected[:k].sum())
            for kind, kmask in self._kinds.get(st.ordinal, {}).items():
                truth["kinds"][kind] += int(kmask[:k].sum())


# -- generators --------------------------------------------------------------------


def _cum(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    return c


def _pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw: ``cum`` is one cumulative distribution (k,) or one per row (n, k)."""
    if cum.ndim == 1:
        return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
    return np.minimum((u[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)


def _to_ms(value: str | datetime | pd.Timestamp) -> int:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as e:
        raise SimulationError(f"start: got {value!r}, expected an ISO-8601 time such as {DEFAULT_START}") from e
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _iso(ms: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ms), "ms"), unit="ms", timezone="UTC"))


class EventGenerator(ABC):
    """Base class: arrivals, ids, scenario bookkeeping, generic scenarios, encoding.

    A subclass sets ``generator`` (the name in ``simulator.generator``),
    ``produces`` (its columns besides event id and time), ``options`` (its
    ``simulator:`` keys with defaults), ``scenario_params`` (its
    ``covariate_shift``/``prior_shift``/``concept_drift`` parameters),
    ``generic_defaults`` and ``arrival_profile`` (24 hourly weights), and
    implements ``_generate``.
    """

    generator: ClassVar[str]
    produces: ClassVar[tuple[str, ...]]
    options: ClassVar[dict[str, Any]]
    scenario_params: ClassVar[dict[str, tuple[str, dict[str, ParamSpec]]]]
    generic_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    arrival_profile: ClassVar[tuple[float, ...]] = (1.0,) * 24
    common_options: ClassVar[dict[str, Any]] = {
        "generator": None,
        "seed": 0,
        "population_seed": None,
        "start": DEFAULT_START,
        "stream_start": None,
        "events_per_hour": 1000.0,
    }

    def __init__(
        self,
        usecase: UseCaseConfig,
        *,
        seed: int | None = None,
        start: str | datetime | None = None,
        events_per_second: float | None = None,
        scenarios: Iterable[Scenario] = (),
        diurnal: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise SimulationError(f"chunk_size: expected a positive number of events, got {chunk_size}")
        self.usecase = usecase
        self.opts = self._resolve_options({**usecase.simulator, **(overrides or {})})
        self.seed = int(self.opts["seed"] if seed is None else seed)
        if self.seed < 0:
            raise SimulationError(f"seed: expected a non-negative integer, got {self.seed}")
        rate = self.opts["events_per_hour"] / 3600.0 if events_per_second is None else float(events_per_second)
        if not rate > 0 or not math.isfinite(rate):
            raise SimulationError(f"events_per_second: expected a positive rate, got {events_per_second!r}")
        self.events_per_second = rate
        self.start_ms = _to_ms(self.opts["start"] if start is None else start)
        self.chunk_size = int(chunk_size)
        self.diurnal = diurnal
        self._check_schema()
        self._label_fields = [
            FieldSpec(name=usecase.event_id, type="string", required=True),
            FieldSpec(name=usecase.label.field, type="boolean" if usecase.label.kind == "binary" else "double",
                      required=True),
            FieldSpec(name="label_time", type="timestamp", required=True),
        ]
        self.delay_ms = int(round(usecase.label.delay_s * 1000))
        self.rng = Generator(PCG64(self.seed))
        self.srng = Generator(PCG64(self.seed).jumped())  # scenario draws leave the base stream untouched
        pop_seed = self.opts["population_seed"]
        self._build_population(Generator(PCG64(self.seed if pop_seed is None else int(pop_seed))))
        self._states = [self._resolve_scenario(s, i) for i, s in enumerate(scenarios)]
        self._last_active: ActiveScenarios | None = None  # the latest chunk, not yet in the truth
        digest = hashlib.sha256(f"{self.generator}|{self.seed}|{self.start_ms}".encode()).hexdigest()
        self.id_prefix = digest[:8]
        self._next_index = 0
        self._setup_arrivals()
        self._dup_window = max([st.params["window"] for st in self._states if st.scenario.name == "duplicates"],
                               default=0)
        self._recent: pd.DataFrame | None = None

    # -- configuration ---------------------------------------------------------

    def _resolve_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        _check_option_names(type(self), raw)
        opts = {**self.common_options, **self.options, **raw}
        for key, default in self.options.items():
            if isinstance(default, int | float) and not isinstance(default, bool):
                value = opts[key]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise SimulationError(f"simulator.{key}: got {value!r}, expected a non-negative number")
        return opts

    def _check_schema(self) -> None:
        uc = self.usecase
        names = {f.name for f in uc.schema_}
        expected = {uc.event_id, uc.event_time, *self.produces}
        if names != expected:
            raise SimulationError(
                f"schema: generator {self.generator!r} produces {sorted(expected)}, "
                f"but use case {uc.name!r} declares {sorted(names)}"
            )

    @classmethod
    def all_scenarios(cls) -> dict[str, tuple[str, dict[str, ParamSpec]]]:
        """Every scenario this generator supports: name -> (description, parameters)."""
        generic = {
            name: (desc, {k: ParamSpec(cls.generic_defaults.get(name, {}).get(k, p.default), p.help, p.kind,
                                       p.low, p.high) for k, p in params.items()})
            for name, (desc, params) in GENERIC_SCENARIOS.items()
        }
        return {**cls.scenario_params, **generic}

    def _resolve_scenario(self, scenario: Scenario, ordinal: int) -> _ScenarioState:
        catalogue = self.all_scenarios()
        if scenario.name not in catalogue:
            raise SimulationError(
                f"scenario {scenario.spec or scenario.name!r}: unknown scenario {scenario.name!r} for generator "
                f"{self.generator!r}; expected one of {sorted(catalogue)}"
            )
        specs = catalogue[scenario.name][1]
        unknown = sorted(set(scenario.params) - set(specs))
        if unknown:
            raise SimulationError(
                f"scenario {scenario.spec or scenario.name!r}: unknown parameter {unknown[0]!r}; "
                f"{scenario.name} takes {sorted(specs)}"
            )
        params = {
            key: spec.convert(scenario.params[key], f"scenario {scenario.spec or scenario.name!r}: {key}")
            if key in scenario.params else spec.default
            for key, spec in specs.items()
        }
        self._check_scenario(scenario, params)
        truth = {
            "scenario": scenario.name,
            "spec": scenario.spec or scenario.name,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            "start_index": None,
            "start_time": None,
            "end_index": None,
            "active_events": 0,
            "affected_events": 0,
        }
        if scenario.name == "malformed":
            truth["kinds"] = {k: 0 for k in params["kinds"]}
        return _ScenarioState(scenario, params, truth, ordinal, self.time_of)

    def _check_scenario(self, scenario: Scenario, params: dict[str, Any]) -> None:
        where = f"scenario {scenario.spec or scenario.name!r}"
        if scenario.name in ("new_category", "missing_spike"):
            column = params["column"]
            uc = self.usecase
            if column in (uc.event_id, uc.event_time) or column not in self.produces:
                raise SimulationError(f"{where}: column: got {column!r}, expected one of {sorted(self.produces)}")
            if scenario.name == "new_category" and uc.field(column).type != "string":
                raise SimulationError(f"{where}: column: {column!r} is not a string column")
            if scenario.name == "new_category" and not params["value"]:
                raise SimulationError(f"{where}: value: expected the new category value")

    # -- arrivals ----------------------------------------------------------------

    def _setup_arrivals(self) -> None:
        w = np.asarray(self.arrival_profile if self.diurnal else (1.0,) * 24, dtype=np.float64)
        w = w / w.mean()
        self._hour_weights = w
        self._c_knots = np.concatenate([[0.0], np.cumsum(w) * 3600.0])
        self._t_knots = np.arange(25, dtype=np.float64) * 3600.0
        self._tod0 = (self.start_ms / 1000.0) % 86400.0
        self._intensity_pos = float(np.interp(self._tod0, self._t_knots, self._c_knots))

    def _arrivals(self, n: int) -> np.ndarray:
        """Non-homogeneous Poisson arrivals (hourly profile), seconds after start."""
        cum = self._intensity_pos + np.cumsum(self.rng.standard_exponential(n)) / self.events_per_second
        self._intensity_pos = float(cum[-1])
        day = np.floor(cum / 86400.0)
        within = np.interp(cum - day * 86400.0, self._c_knots, self._t_knots)
        return day * 86400.0 + within - self._tod0

    def hours(self, arrival_s: np.ndarray) -> np.ndarray:
        """UTC hour of day (0-23) of simulated times ``arrival_s``."""
        return ((self.start_ms / 1000.0 + arrival_s) // 3600 % 24).astype(np.int64)

    # -- subclass hooks ------------------------------------------------------------

    @abstractmethod
    def _build_population(self, rng: Generator) -> None:
        """Draw the fixed population (customers, merchants, restaurants...)."""

    @abstractmethod
    def _generate(self, arrival_s: np.ndarray, active: ActiveScenarios) -> tuple[pd.DataFrame, np.ndarray]:
        """The ``produces`` columns and the label of each event."""

    # -- the stream ----------------------------------------------------------------

    @property
    def position(self) -> int:
        """How many events (including duplicates and malformed ones) were generated so far."""
        return self._next_index

    def next_chunk(self) -> Chunk:
        """The next ``chunk_size`` events and their labels.

        Example::

            chunk = gen.next_chunk()
            chunk.events["amount"].mean()
        """
        uc = self.usecase
        n = self.chunk_size
        first = self._next_index
        index = np.arange(first, first + n, dtype=np.int64)
        arrival = self._arrivals(n)
        if self._last_active is not None:
            self._last_active.fold()
        active = ActiveScenarios(self._states, index, arrival, self.srng)
        self._last_active = active

        frame, label = self._generate(arrival, active)
        for sel, p in active.sample("new_category", "share"):
            frame.loc[sel, p["column"]] = p["value"]
        for sel, p in active.sample("missing_spike"):
            col = frame[p["column"]]
            frame[p["column"]] = col.astype(object) if col.dtype.kind in "iub" else col
            frame.loc[sel, p["column"]] = None

        event_ms = self.start_ms + np.round(arrival * 1000.0).astype(np.int64)
        late_ms = np.zeros(n, dtype=np.int64)
        for sel, p in active.sample("late"):
            lag = self.srng.standard_exponential(n) * p["lag"]
            late_ms[sel] = np.maximum(1, np.round(lag[sel] * 1000.0)).astype(np.int64)
        event_ms = event_ms - late_ms

        malformed = np.full(n, None, dtype=object)
        pad = np.zeros(n, dtype=np.int64)
        for st, mask in active.states():
            if st.scenario.name != "malformed":
                continue
            sel = mask & (self.srng.random(n) < st.params["rate"])
            kinds = np.array(st.params["kinds"], dtype=object)
            which = kinds[np.minimum((self.srng.random(n) * len(kinds)).astype(np.int64), len(kinds) - 1)]
            malformed[sel] = which[sel]
            pad[sel] = st.params["size"]
            active.mark(st, sel)
            for kind in st.params["kinds"]:
                active.mark(st, sel & (which == kind), kind)

        ids = self.event_ids(index)
        columns: dict[str, Any] = {uc.event_id: ids, uc.event_time: event_ms.astype("datetime64[ms]")}
        columns.update({name: frame[name].to_numpy() for name in self.produces})
        events = pd.DataFrame({
            **{f.name: columns[f.name] for f in uc.schema_},
            "_index": index,
            "_malformed": malformed,
            "_variant": index,
            "_pad": pad,
            "_duplicate_of": np.full(n, -1, dtype=np.int64),
            "_late_ms": late_ms,
        })

        fresh = self._apply_duplicates(events, active)
        active.keep_only(fresh, unless="duplicates")  # a slot taken by a repeat shows no other scenario
        label_ms = event_ms[fresh] + self.delay_ms
        labels = self.label_frame(index[fresh], label[fresh], label_ms.astype("datetime64[ms]"))
        release = np.maximum((label_ms - self.start_ms) / 1000.0, arrival[fresh])
        self._next_index += n
        return Chunk(first, events, arrival, labels, release)

    def _apply_duplicates(self, events: pd.DataFrame, active: ActiveScenarios) -> np.ndarray:
        """Replace some rows by copies of earlier rows; return the mask of rows that stay fresh."""
        n = len(events)
        is_dup = np.zeros(n, dtype=bool)
        windows = np.zeros(n, dtype=np.int64)
        picked = []
        for st, mask in active.states():
            if st.scenario.name == "duplicates":
                sel = mask & (self.srng.random(n) < st.params["rate"])
                picked.append((st, sel))
                is_dup |= sel
                windows[sel] = st.params["window"]
        recent = self._recent if self._recent is not None else events.iloc[:0]
        if is_dup.any():
            pool = pd.concat([recent, events], ignore_index=True)
            offset = len(recent)
            pos = offset + np.arange(n)
            lag = 1 + np.floor(self.srng.random(n) * windows).astype(np.int64)
            src = pos - np.minimum(lag, pos)
            is_dup &= src < pos  # nothing earlier to repeat before the very first event
            pool_dup = np.zeros(len(pool), dtype=bool)
            pool_dup[offset:] = is_dup
            pool_src = np.arange(len(pool))
            pool_src[offset:][is_dup] = src[is_dup]
            target = pool_src.copy()
            while pool_dup[target].any():  # a copy of a copy repeats the original
                chained = pool_dup[target]
                target[chained] = pool_src[target[chained]]
            rows = np.flatnonzero(is_dup)
            sources = target[offset + rows]
            copied = pool.iloc[sources]
            keep = [c for c in events.columns if c not in ("_index", "_duplicate_of")]
            for col in keep:
                events.iloc[rows, events.columns.get_loc(col)] = copied[col].to_numpy()
            original = copied["_duplicate_of"].to_numpy()
            events.iloc[rows, events.columns.get_loc("_duplicate_of")] = np.where(
                original >= 0, original, copied["_index"].to_numpy()
            )
        for st, sel in picked:
            active.mark(st, sel & is_dup)
        if self._dup_window:
            self._recent = pd.concat([recent, events], ignore_index=True).iloc[-self._dup_window:]
        return ~is_dup

    # -- encoding ----------------------------------------------------------------

    @property
    def oversize_field(self) -> str:
        """The string field padded by ``malformed`` kind ``oversized``."""
        uc = self.usecase
        candidates = [f.name for f in uc.schema_
                      if f.type == "string" and f.name not in (uc.event_id, uc.entity_key)]
        return candidates[0] if candidates else uc.event_id

    def encode_events(self, chunk: Chunk) -> list[bytes]:
        """The events of ``chunk`` as JSON bytes (malformed ones broken as recorded)."""
        return encode_json_lines(chunk.events, self.usecase.schema_, event_id=self.usecase.event_id,
                                 oversize_field=self.oversize_field)

    def event_keys(self, chunk: Chunk) -> list[bytes | None]:
        """The Kafka key of each event: its entity key as UTF-8 (None when nulled)."""
        codes, uniques = pd.factorize(chunk.events[self.usecase.entity_key].to_numpy(), use_na_sentinel=True)
        table = np.array([*(str(u).encode() for u in uniques), None], dtype=object)
        return table[codes].tolist()  # code -1 (null) picks the trailing None

    def event_ids(self, index: np.ndarray) -> np.ndarray:
        """The event id of each emission index (a repeat keeps its original's id)."""
        return np.array(list(map(f"{self.id_prefix}-%010d".__mod__, index.tolist())), dtype=object)

    def label_frame(self, index: np.ndarray, values: np.ndarray, label_time: np.ndarray) -> pd.DataFrame:
        """Label rows (event id, label, ``label_time``, ``_index``) rebuilt from their parts,
        so that labels waiting for their time can be kept as compact arrays."""
        return pd.DataFrame({
            self.usecase.event_id: self.event_ids(index),
            self.usecase.label.field: values,
            "label_time": label_time.astype("datetime64[ms]"),
            "_index": index,
        })

    def encode_labels(self, labels: Chunk | pd.DataFrame) -> list[bytes]:
        """Label records ``{<event id>, <label field>, label_time}`` of a chunk or a :meth:`label_frame`."""
        frame = labels.labels if isinstance(labels, Chunk) else labels
        return encode_json_lines(frame, self._label_fields)

    def label_keys(self, labels: Chunk | pd.DataFrame) -> list[bytes]:
        """The Kafka key of each label: the event id."""
        frame = labels.labels if isinstance(labels, Chunk) else labels
        return [v.encode() for v in frame[self.usecase.event_id].tolist()]

    def ground_truth(self, upto_index: int | None = None) -> list[dict[str, Any]]:
        """One record per scenario: spec, resolved params, first event index and time it
        covered (None if not reached), how many events it covered (``active_events``) and
        changed (``affected_events``; per kind for ``malformed``).

        ``upto_index`` counts only events before that emission index (a run that stopped
        inside the latest chunk); by default every event generated so far counts.
        """
        committed = [json.loads(json.dumps(st.truth)) for st in self._states]
        last = self._last_active
        if last is None:
            return committed
        saved = [st.truth for st in self._states]
        try:
            for st, copy in zip(self._states, committed, strict=True):
                st.truth = copy
            first = int(last.index[0]) if last.n else 0
            last.fold(None if upto_index is None else upto_index - first)
        finally:
            for st, original in zip(self._states, saved, strict=True):
                st.truth = original
        return committed

    def time_of(self, arrival_s: float) -> str:
        """ISO-8601 UTC text of a simulated time."""
        return _iso(self.start_ms + int(round(arrival_s * 1000)))


# -- card transactions (fraud) -----------------------------------------------------

_CATEGORIES = ("grocery", "restaurants", "fuel", "travel", "electronics", "fashion", "online_services", "gambling")
_CAT_AMOUNT = np.array([1.0, 0.8, 1.3, 4.0, 3.0, 1.8, 0.5, 1.0])
_CAT_MERCHANTS = (0.25, 0.2, 0.1, 0.06, 0.1, 0.14, 0.12, 0.03)
_CAT_ONLINE = _CATEGORIES.index("online_services")
_COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "GB", "US", "BR", "NG", "CN")
_HOME = (0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.06, 0.02, 0.01, 0.01)
_TRAVEL = (0.1, 0.15, 0.08, 0.22, 0.18, 0.12, 0.1, 0.02, 0.01, 0.02)
_FRAUD_COUNTRY = (0.02, 0.02, 0.02, 0.03, 0.03, 0.08, 0.2, 0.2, 0.25, 0.15)
_CURRENCY = ("EUR", "USD", "GBP")
_HOME_CURRENCY = np.array([0, 0, 0, 0, 0, 2, 1, 1, 1, 1])
_CHANNELS = ("pos", "online", "atm")
_DEVICES = ("chip", "contactless", "mobile", "web", "magstripe")
# device distribution per channel (rows: pos, online, atm; columns: _DEVICES)
_DEVICE_NORMAL = np.array([[0.42, 0.55, 0.0, 0.0, 0.03], [0.0, 0.0, 0.5, 0.5, 0.0], [0.97, 0.0, 0.0, 0.0, 0.03]])
_DEVICE_FRAUD = np.array([[0.3, 0.2, 0.0, 0.0, 0.5], [0.0, 0.0, 0.25, 0.75, 0.0], [0.4, 0.0, 0.0, 0.0, 0.6]])
_DEVICE_SKIM = np.array([[0.3, 0.0, 0.0, 0.0, 0.7], [0.0, 0.0, 0.5, 0.5, 0.0], [0.3, 0.0, 0.0, 0.0, 0.7]])
_FRAUD_CATS = (0.04, 0.03, 0.03, 0.15, 0.3, 0.1, 0.2, 0.15)
_SKIM_CATS = (0.45, 0.2, 0.35, 0.0, 0.0, 0.0, 0.0, 0.0)
_FRAUD_CHANNEL = (0.18, 0.7, 0.12)


def _cum_rows(matrix: np.ndarray) -> np.ndarray:
    c = np.cumsum(matrix / matrix.sum(axis=1, keepdims=True), axis=1)
    c[:, -1] = 1.0
    return c


class CardTransactions(EventGenerator):
    """Card payments of a fixed customer population; fraud is about ``fraud_rate`` of them.

    Each customer has a home country and currency, a typical amount
    (log-normal), a share of online shopping, category preferences and an
    activity level. The label is drawn first (more fraud at night, 0-5 h UTC),
    then the features from the class's profile: fraud is larger (about 4x the
    customer's typical amount), often abroad, mostly online, in risky categories,
    with magstripe or web devices. ``concept_drift`` switches fraud to
    card-present skimming that looks like ordinary domestic spending.
    """

    generator = "card_transactions"
    produces = ("customer_id", "merchant_id", "merchant_category", "amount", "currency", "country", "channel",
                "device")
    options: ClassVar[dict[str, Any]] = {"customers": 2000, "merchants": 300, "fraud_rate": 0.01,
                                         "events_per_hour": 2000.0}
    scenario_params: ClassVar[dict[str, tuple[str, dict[str, ParamSpec]]]] = {
        "covariate_shift": (
            "amounts scaled, optionally a country's share jumps; labels unchanged",
            {"factor": ParamSpec(3.0, "amount multiplier", "float", 0.0),
             "country": ParamSpec("", "country code whose share jumps (e.g. US)", "str"),
             "share": _rate(0.3, "fraction of events moved to country")},
        ),
        "prior_shift": (
            "the fraud rate changes; each class's features unchanged",
            {"rate": _rate(0.05, "new base fraud rate")},
        ),
        "concept_drift": (
            "fraud switches to domestic card-present skimming with ordinary amounts",
            {"share": _rate(1.0, "fraction of fraud using the new pattern")},
        ),
    }
    generic_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "new_category": {"column": "merchant_category", "value": "crypto"},
        "missing_spike": {"column": "device"},
    }
    arrival_profile = (0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.5, 0.9, 1.2, 1.3, 1.4, 1.5,
                       1.7, 1.6, 1.4, 1.3, 1.4, 1.6, 1.8, 1.7, 1.4, 1.0, 0.6, 0.3)

    def _check_scenario(self, scenario: Scenario, params: dict[str, Any]) -> None:
        super()._check_scenario(scenario, params)
        if scenario.name == "covariate_shift" and params["country"] and params["country"] not in _COUNTRIES:
            raise SimulationError(
                f"scenario {scenario.spec!r}: country: got {params['country']!r}, expected one of {list(_COUNTRIES)}"
                " (use new_category for unseen values)"
            )

    def _build_population(self, rng: Generator) -> None:
        n_c, n_m = int(self.opts["customers"]), int(self.opts["merchants"])
        if n_c < 1:
            raise SimulationError(f"simulator.customers: got {n_c}, expected at least 1")
        if n_m < len(_CATEGORIES):
            raise SimulationError(f"simulator.merchants: got {n_m}, expected at least {len(_CATEGORIES)}")
        if not 0 <= self.opts["fraud_rate"] <= 1:
            raise SimulationError(f"simulator.fraud_rate: got {self.opts['fraud_rate']!r}, expected a value in [0, 1]")
        self.customer_ids = np.array([f"c{i:05d}" for i in range(n_c)], dtype=object)
        self.home = _pick(_cum(_HOME), rng.random(n_c))
        self.typical = np.exp(rng.normal(np.log(35.0), 0.5, n_c))
        self.p_online = rng.beta(2.0, 6.0, n_c)
        prefs = rng.dirichlet(np.array([6, 4, 3, 0.7, 1, 2, 2, 0.3], dtype=np.float64), n_c)
        self.pref_cum = _cum_rows(prefs)
        self.activity_cum = _cum(np.exp(rng.normal(0.0, 0.8, n_c)))
        self.merchant_ids = np.array([f"m{i:04d}" for i in range(n_m)], dtype=object)
        m_cat = np.concatenate([np.arange(len(_CATEGORIES)),
                                _pick(_cum(_CAT_MERCHANTS), rng.random(n_m - len(_CATEGORIES)))])
        self.m_order = np.argsort(m_cat, kind="stable")
        self.m_count = np.bincount(m_cat, minlength=len(_CATEGORIES))
        self.m_start = np.concatenate([[0], np.cumsum(self.m_count)[:-1]])
        night = np.array([4.0 if h < 6 else 1.0 for h in range(24)])
        w = np.asarray(self.arrival_profile if self.diurnal else (1.0,) * 24)
        self.fraud_hour = night / (np.sum(w * night) / np.sum(w))  # keeps the average rate at fraud_rate

    def _generate(self, arrival_s: np.ndarray, active: ActiveScenarios) -> tuple[pd.DataFrame, np.ndarray]:
        rng, n = self.rng, len(arrival_s)
        base = np.full(n, float(self.opts["fraud_rate"]))
        for mask, p in active.get("prior_shift"):
            base[mask] = p["rate"]
        fraud = rng.random(n) < np.clip(base * self.fraud_hour[self.hours(arrival_s)], 0.0, 1.0)
        cust = _pick(self.activity_cum, rng.random(n))
        cat = _pick(self.pref_cum[cust], rng.random(n))
        country = np.where(rng.random(n) < 0.04, _pick(_cum(_TRAVEL), rng.random(n)), self.home[cust])
        u = rng.random(n)
        channel = np.where(u < 0.04, 2, np.where(u < 0.04 + 0.96 * self.p_online[cust], 1, 0))
        channel[cat == _CAT_ONLINE] = 1
        amount = self.typical[cust] * _CAT_AMOUNT[cat] * np.exp(rng.normal(0.0, 0.45, n))
        device_table = np.broadcast_to(_DEVICE_NORMAL, (n, *_DEVICE_NORMAL.shape)).copy()

        # The fraud profile is drawn for every row and used where the label is fraud, so the
        # number of draws never depends on the labels (a prior shift leaves other events as they were).
        skim = np.zeros(n, dtype=bool)
        for mask, p in active.get("concept_drift"):
            skim |= mask & (active.rng.random(n) < p["share"])
        abroad = rng.random(n) < 0.65
        classic_country = np.where(abroad, _pick(_cum(_FRAUD_COUNTRY), rng.random(n)), self.home[cust])
        classic_cat = _pick(_cum(_FRAUD_CATS), rng.random(n))
        classic_channel = _pick(_cum(_FRAUD_CHANNEL), rng.random(n))
        classic_amount = self.typical[cust] * np.exp(rng.normal(np.log(4.0), 0.7, n))
        skim_cat = _pick(_cum(_SKIM_CATS), rng.random(n))
        skim_amount = self.typical[cust] * _CAT_AMOUNT[skim_cat] * np.exp(rng.normal(0.0, 0.35, n))
        f = np.flatnonzero(fraud)
        skim_f = skim[f]
        cat[f] = np.where(skim_f, skim_cat[f], classic_cat[f])
        country[f] = np.where(skim_f, self.home[cust[f]], classic_country[f])
        channel[f] = np.where(skim_f, 0, classic_channel[f])
        amount[f] = np.where(skim_f, skim_amount[f], classic_amount[f])
        device_table[f] = np.where(skim_f[:, None, None], _DEVICE_SKIM, _DEVICE_FRAUD)
        device_cum = _cum_rows(device_table[np.arange(n), channel])
        device = _pick(device_cum, rng.random(n))
        merchant = self.m_order[self.m_start[cat] + np.minimum((rng.random(n) * self.m_count[cat]).astype(np.int64),
                                                               self.m_count[cat] - 1)]

        for mask, p in active.get("covariate_shift"):
            amount[mask] *= p["factor"]
            if p["country"]:
                moved = mask & (active.rng.random(n) < p["share"])
                country[moved] = _COUNTRIES.index(p["country"])
        for st, mask in active.states():
            if st.scenario.name in ("covariate_shift", "prior_shift"):
                active.mark(st, mask)
            elif st.scenario.name == "concept_drift":
                active.mark(st, mask & fraud)

        frame = pd.DataFrame({
            "customer_id": self.customer_ids[cust],
            "merchant_id": self.merchant_ids[merchant],
            "merchant_category": np.array(_CATEGORIES, dtype=object)[cat],
            "amount": np.clip(np.round(amount, 2), 0.5, 50_000.0),
            "currency": np.array(_CURRENCY, dtype=object)[_HOME_CURRENCY[self.home[cust]]],
            "country": np.array(_COUNTRIES, dtype=object)[country],
            "channel": np.array(_CHANNELS, dtype=object)[channel],
            "device": np.array(_DEVICES, dtype=object)[device],
        })
        return frame, fraud


# -- delivery orders (eta) -----------------------------------------------------------

_ZONES = ("north", "south", "east", "west", "center")
_RUSH_HOURS = (12, 13, 18, 19, 20)
LOAD_WINDOW_S = 600.0


class DeliveryOrders(EventGenerator):
    """Food-delivery orders; the label is the delivery time in minutes.

    Restaurants have their own preparation-time habit (log-normal mean), a
    popularity, a capacity and a price level. Delivery minutes = preparation
    (longer with more items) + load (1 minute per order the restaurant received
    in the previous 10 minutes, 3 more per order above its capacity) + pickup +
    distance x minutes per km (slower at lunch and dinner rush) + noise.
    """

    generator = "delivery_orders"
    produces = ("restaurant_id", "courier_zone", "items", "distance_km", "order_value")
    options: ClassVar[dict[str, Any]] = {"restaurants": 400, "events_per_hour": 1000.0}
    scenario_params: ClassVar[dict[str, tuple[str, dict[str, ParamSpec]]]] = {
        "covariate_shift": (
            "distances scaled, optionally a zone's share jumps (label follows the same rule)",
            {"factor": ParamSpec(1.5, "distance multiplier", "float", 0.0),
             "zone": ParamSpec("", "courier zone whose share jumps (e.g. center)", "str"),
             "share": _rate(0.3, "fraction of orders moved to zone")},
        ),
        "prior_shift": (
            "delivery minutes shift by an offset the features do not explain",
            {"offset": ParamSpec(10.0, "minutes added to every delivery", "float")},
        ),
        "concept_drift": (
            "minutes per km change (traffic), so distance relates differently to the label",
            {"factor": ParamSpec(2.0, "minutes-per-km multiplier", "float", 0.0)},
        ),
    }
    generic_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "new_category": {"column": "courier_zone", "value": "airport"},
        "missing_spike": {"column": "order_value"},
    }
    arrival_profile = (0.1, 0.05, 0.03, 0.03, 0.03, 0.05, 0.2, 0.4, 0.5, 0.6, 0.9, 1.8,
                       2.5, 2.0, 1.0, 0.7, 0.8, 1.3, 2.6, 3.0, 2.4, 1.4, 0.8, 0.3)

    def _check_scenario(self, scenario: Scenario, params: dict[str, Any]) -> None:
        super()._check_scenario(scenario, params)
        if scenario.name == "covariate_shift" and params["zone"] and params["zone"] not in _ZONES:
            raise SimulationError(
                f"scenario {scenario.spec!r}: zone: got {params['zone']!r}, expected one of {list(_ZONES)}"
                " (use new_category for unseen values)"
            )

    def _build_population(self, rng: Generator) -> None:
        n_r = int(self.opts["restaurants"])
        if n_r < 1:
            raise SimulationError(f"simulator.restaurants: got {n_r}, expected at least 1")
        self.restaurant_ids = np.array([f"r{i:04d}" for i in range(n_r)], dtype=object)
        self.zone = _pick(_cum((0.175, 0.175, 0.175, 0.175, 0.3)), rng.random(n_r))
        self.prep_mean = np.exp(rng.normal(np.log(12.0), 0.35, n_r))
        self.popularity_cum = _cum(np.exp(rng.normal(0.0, 1.0, n_r)))
        self.capacity = rng.integers(3, 11, n_r)
        self.price = np.exp(rng.normal(np.log(11.0), 0.3, n_r))
        self._recent_r = np.zeros(0, dtype=np.int64)
        self._recent_t = np.zeros(0, dtype=np.float64)

    def _load(self, restaurant: np.ndarray, arrival_s: np.ndarray) -> np.ndarray:
        """Orders the same restaurant received in the ``LOAD_WINDOW_S`` seconds before each order."""
        r_all = np.concatenate([self._recent_r, restaurant])
        t_all = np.concatenate([self._recent_t, arrival_s])
        span = float(t_all.max() - t_all.min()) + 2 * LOAD_WINDOW_S
        key = r_all * span + (t_all - t_all.min())
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        before = np.arange(len(key)) - np.searchsorted(sorted_key, sorted_key - LOAD_WINDOW_S, side="right")
        counts = np.empty(len(key), dtype=np.int64)
        counts[order] = before
        keep = t_all > arrival_s[-1] - LOAD_WINDOW_S
        self._recent_r, self._recent_t = r_all[keep], t_all[keep]
        return counts[len(r_all) - len(restaurant):]

    def _generate(self, arrival_s: np.ndarray, active: ActiveScenarios) -> tuple[pd.DataFrame, np.ndarray]:
        rng, n = self.rng, len(arrival_s)
        rest = _pick(self.popularity_cum, rng.random(n))
        same = rng.random(n) < 0.7
        other = (self.zone[rest] + 1 + np.minimum((rng.random(n) * 4).astype(np.int64), 3)) % len(_ZONES)
        zone = np.where(same, self.zone[rest], other)
        near = np.exp(rng.normal(np.log(2.0), 0.5, n))
        far = np.exp(rng.normal(np.log(5.5), 0.35, n))
        distance = np.where(same, near, far)
        items = np.minimum(1 + rng.poisson(1.6, n), 50)
        value = np.clip(np.round(items * self.price[rest] * np.exp(rng.normal(0.0, 0.2, n)), 2), 1.0, 1000.0)
        for mask, p in active.get("covariate_shift"):
            distance[mask] *= p["factor"]
            if p["zone"]:
                moved = mask & (active.rng.random(n) < p["share"])
                zone[moved] = _ZONES.index(p["zone"])
        distance = np.clip(np.round(distance, 2), 0.1, 30.0)

        load = self._load(rest, arrival_s)
        prep = self.prep_mean[rest] * (1 + 0.08 * (items - 1)) * np.exp(rng.normal(0.0, 0.15, n))
        per_km = np.where(np.isin(self.hours(arrival_s), _RUSH_HOURS), 2.8 * 1.3, 2.8)
        for mask, p in active.get("concept_drift"):
            per_km[mask] *= p["factor"]
        minutes = (prep + 1.0 * load + 3.0 * np.maximum(0, load - self.capacity[rest]) + 4.0 + distance * per_km
                   + rng.normal(0.0, 3.0, n))
        for mask, p in active.get("prior_shift"):
            minutes[mask] += p["offset"]
        for st, mask in active.states():
            if st.scenario.name in ("covariate_shift", "prior_shift", "concept_drift"):
                active.mark(st, mask)

        frame = pd.DataFrame({
            "restaurant_id": self.restaurant_ids[rest],
            "courier_zone": np.array(_ZONES, dtype=object)[zone],
            "items": items.astype(np.int64),
            "distance_km": distance,
            "order_value": value,
        })
        return frame, np.round(np.clip(minutes, 5.0, 240.0), 1)


GENERATORS: dict[str, type[EventGenerator]] = {
    CardTransactions.generator: CardTransactions,
    DeliveryOrders.generator: DeliveryOrders,
}


def _generator_class(usecase: UseCaseConfig) -> type[EventGenerator]:
    name = usecase.simulator.get("generator")
    if name not in GENERATORS:
        raise SimulationError(
            f"simulator.generator: got {name!r} in use case {usecase.name!r}, expected one of {sorted(GENERATORS)}"
        )
    return GENERATORS[name]


def _check_option_names(cls: type[EventGenerator], raw: Mapping[str, Any]) -> None:
    known = {**cls.common_options, **cls.options}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SimulationError(
            f"simulator.{unknown[0]}: unknown option for generator {cls.generator!r}; known: {sorted(known)}"
        )


def check_simulator_options(usecase: UseCaseConfig) -> None:
    """The ``simulator:`` section against its generator's declared options (run at load).

    Example::

        check_simulator_options(load_usecase("fraud"))  # raises SimulationError on a typo
    """
    _check_option_names(_generator_class(usecase), usecase.simulator)


def make_generator(
    usecase: UseCaseConfig,
    *,
    seed: int | None = None,
    start: str | datetime | None = None,
    events_per_second: float | None = None,
    scenarios: Iterable[Scenario | str] = (),
    diurnal: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overrides: Mapping[str, Any] | None = None,
) -> EventGenerator:
    """The generator named in ``usecase.simulator['generator']``, ready to stream.

    ``seed`` and ``start`` default to ``simulator.seed`` and ``simulator.start``;
    ``events_per_second`` to ``simulator.events_per_hour / 3600``. Scenarios may be
    given as specs (strings) or :class:`Scenario` objects.

    Example::

        gen = make_generator(load_usecase("eta"), seed=1, scenarios=["late@1h:rate=0.2"])
    """
    cls = _generator_class(usecase)
    parsed = [parse_scenario(s) if isinstance(s, str) else s for s in scenarios]
    return cls(usecase, seed=seed, start=start, events_per_second=events_per_second,
                            scenarios=parsed, diurnal=diurnal, chunk_size=chunk_size, overrides=overrides)


def scenario_help(generators: Iterable[str] | None = None, usecases: Mapping[str, Sequence[str]] | None = None) -> str:
    """Plain-text list of the scenarios and their parameters (defaults per generator).

    ``usecases`` maps a generator name to the use cases that use it, shown next to it.

    Example::

        print(scenario_help(["card_transactions"], {"card_transactions": ["fraud"]}))
    """
    names = list(generators) if generators is not None else sorted(GENERATORS)
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise SimulationError(f"generators: unknown {unknown}, expected some of {sorted(GENERATORS)}")
    lines: list[str] = []
    for gname in names:
        cls = GENERATORS[gname]
        used_by = ", ".join((usecases or {}).get(gname, ()))
        lines.append(f"generator {gname}" + (f" (use case {used_by}):" if used_by else ":"))
        for sname, (desc, params) in cls.scenario_params.items():
            lines.append(f"  {sname}:{_fmt_params(params)}")
            lines.append(f"      {desc}")
        for sname, defaults in cls.generic_defaults.items():
            lines.append(f"  {sname} defaults: " + ",".join(f"{k}={v}" for k, v in defaults.items()))
    lines.append("every generator:")
    for sname, (desc, params) in GENERIC_SCENARIOS.items():
        lines.append(f"  {sname}:{_fmt_params(params)}")
        lines.append(f"      {desc}")
    return "\n".join(lines)


def _fmt_params(params: Mapping[str, ParamSpec]) -> str:
    return ",".join(f"{k}={_fmt_default(p)}" for k, p in params.items())


def _fmt_default(p: ParamSpec) -> str:
    value = p.default
    if value is None:
        return "<per generator>"
    if isinstance(value, tuple):
        return "+".join(value)
    if value == "":
        return "<none>"
    if p.kind == "duration":
        return f"{value:g}s"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- history files -------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryResult:
    """What :func:`write_history` wrote."""

    out_dir: Path
    events: int
    labels: int
    start_time: str
    end_time: str
    files: dict[str, Path]
    ground_truth: list[dict[str, Any]]


def write_history(
    gen: EventGenerator,
    out_dir: str | Path,
    duration_s: float,
    progress: Callable[[int], None] | None = None,
) -> HistoryResult:
    """Write ``duration_s`` of simulated history as JSON lines under ``out_dir``.

    Files: ``events.jsonl`` (the raw payloads, malformed ones included),
    ``labels.jsonl`` (every fresh event's label, some after the last event),
    ``ground_truth.jsonl`` (one record per scenario), ``event_truth.jsonl``
    (each event a record-level scenario touched: index, id, malformed kind,
    duplicate_of, late_ms) and ``manifest.json``.

    Example::

        write_history(make_generator(load_usecase("fraud"), seed=7), "/tmp/hist", duration_s=86400)
    """
    if not duration_s > 0:
        raise SimulationError(f"duration_s: expected a positive number of seconds, got {duration_s!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / f"{k}.jsonl" for k in ("events", "labels", "ground_truth", "event_truth")}
    files["manifest"] = out / "manifest.json"
    uc = gen.usecase
    n_events = n_labels = 0
    with (files["events"].open("wb") as ev, files["labels"].open("wb") as lb,
          files["event_truth"].open("w") as et):
        while True:
            chunk = gen.next_chunk()
            inside = int(np.searchsorted(chunk.arrival_s, duration_s, side="left"))
            done = inside < len(chunk)
            if done:
                chunk = chunk.head(inside)
            if len(chunk):
                ev.write(b"\n".join(gen.encode_events(chunk)) + b"\n")
                if len(chunk.labels):
                    lb.write(b"\n".join(gen.encode_labels(chunk)) + b"\n")
                _write_event_truth(et, chunk.events, uc.event_id)
                n_events += len(chunk)
                n_labels += len(chunk.labels)
                if progress is not None:
                    progress(len(chunk))
            if done:
                break
    truth = gen.ground_truth(upto_index=n_events)
    files["ground_truth"].write_text("".join(json.dumps(t, sort_keys=True) + "\n" for t in truth))
    start_time, end_time = _iso(gen.start_ms), gen.time_of(duration_s)
    manifest = {
        "usecase": uc.name,
        "generator": gen.generator,
        "seed": gen.seed,
        "start_time": start_time,
        "end_time": end_time,
        "events_per_hour": gen.events_per_second * 3600,
        "events": n_events,
        "labels": n_labels,
        "label_delay_s": uc.label.delay_s,
        "scenarios": [t["spec"] for t in truth],
        "usecase_digest": uc.digest(),
    }
    files["manifest"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.debug("wrote %d events and %d labels to %s", n_events, n_labels, out)
    return HistoryResult(out, n_events, n_labels, start_time, end_time, files, truth)


def _write_event_truth(fh: Any, events: pd.DataFrame, event_id: str) -> None:
    touched = (events["_malformed"].notna() | (events["_duplicate_of"] >= 0) | (events["_late_ms"] > 0)).to_numpy()
    if not touched.any():
        return
    sub = events.loc[touched, ["_index", event_id, "_malformed", "_duplicate_of", "_late_ms"]]
    for idx, eid, kind, dup, late in sub.itertuples(index=False, name=None):
        fh.write(json.dumps({"index": int(idx), "event_id": eid, "malformed": kind,
                             "duplicate_of": int(dup) if dup >= 0 else None,
                             "late_ms": int(late) if late > 0 else None}, sort_keys=True) + "\n")
