"""Alerts: the N-of-M-windows rule over the monitoring tables.

A window (``window_start``, ``window_end``) is *bad* when any row of it is
flagged in one of the monitoring tables the stream monitor writes:
``monitoring/<uc>_drift`` (``drifted``), ``monitoring/<uc>_quality`` and
``monitoring/<uc>_performance`` (``breached``). Only the latest computation of a
window counts (its rows with the newest ``computed_at``). The flagged rows are
the alert's reasons (which features drifted, which metrics breached). A table
that is missing, or lacks the columns of that contract (:data:`REQUIRED_COLUMNS`),
is left out with a log line.

The rule, from the use case's ``drift.alert`` section (:class:`AlertRule`)::

    drift:
      alert: {n: 2, m: 3, retrain: true, cooldown_windows: 3}

fires at a bad window when at least ``n`` of the last ``m`` windows (ordered by
``window_end``, the window itself included) are bad, unless an alert fired in
the ``cooldown_windows`` windows before it (default ``m``). The rule is
deterministic: the same windows give the same alerts. An alert's id is derived
from the use case and the ``window_end`` it fired at, so evaluating again raises
nothing new.

Who evaluates: the stream monitor itself, as windows close
(:class:`AlertEvaluator`, one per ``start_monitor`` call, its lock shared by the
source queries so two sources closing at once publish an alert once), and
``driftline alerts check`` by hand. ``driftline alerts check`` reads the whole
history; the monitor reads only the windows from a few ``m + cooldown`` before the
first window written since its last evaluation (:func:`tail_fire_points` gives the
whole-history answer from them, or says it cannot, and the whole history is read).

A new alert is published as JSON to ``<uc>.alerts`` (key: the alert id), logged
(one INFO line ``ALERT <id> …``) and then recorded in ``monitoring/<uc>_alerts``
(MERGE on ``alert_id``). Publishing comes first: if recording fails, the next
evaluation publishes the alert again, so consumers see each alert at least once
and dedupe on ``alert_id`` (``jobs/pipeline.py --on-alert`` does).

    new = evaluate_alerts(spark, platform, uc)   # [Alert(alert_id='…', window_end=…, reasons=(…))]
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from driftline import catalog
from driftline.catalog import ALERTS_SCHEMA
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.sections import SOURCES, AlertRule, Source
from driftline.delta import arrow_table, in_object_store, local_table, merge_new_rows, rows_local
from driftline.errors import BrokerError, UsageError
from driftline.kafka.gaps import Gap

log = logging.getLogger(__name__)


# The columns each monitoring table must have to take part (the stream monitor's contract).
REQUIRED_COLUMNS: dict[Source, tuple[str, ...]] = {
    "drift": ("window_start", "window_end", "feature", "statistic", "value", "p_adjusted", "threshold", "drifted",
              "computed_at"),
    "quality": ("window_start", "window_end", "metric", "column", "value", "threshold", "breached", "computed_at"),
    "performance": ("window_start", "window_end", "metric", "value", "threshold", "breached", "computed_at"),
}


def alert_rule(uc: UseCaseConfig) -> AlertRule:
    """The use case's rule, ``drift.alert`` (defaults ``n=2, m=3``; parsed and checked at load).

    Example::

        alert_rule(load_usecase("fraud")).n  # 2
    """
    return uc.drift.alert


# --------------------------------------------------------------------------- the rule, pure


@dataclass(frozen=True)
class Reason:
    """One flagged monitoring row: what made a window bad."""

    source: str
    window_start: datetime
    window_end: datetime
    subject: str
    statistic: str
    value: float | None = None
    threshold: float | None = None
    p_adjusted: float | None = None

    def text(self) -> str:
        """``drift amount psi=0.31 (threshold 0.2)``."""
        value = "null" if self.value is None else f"{self.value:.4g}"
        out = f"{self.source} {self.subject} {self.statistic}={value}"
        if self.threshold is not None:
            out += f" (threshold {self.threshold:.4g})"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "window_start": _iso(self.window_start), "window_end": _iso(self.window_end),
                "subject": self.subject, "statistic": self.statistic, "value": self.value,
                "threshold": self.threshold, "p_adjusted": self.p_adjusted}


@dataclass(frozen=True)
class WindowStatus:
    """One monitoring window and the reasons it is bad (none: a good window)."""

    window_start: datetime
    window_end: datetime
    reasons: tuple[Reason, ...] = ()

    @property
    def bad(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Alert:
    """An N-of-M alert, as published to ``<uc>.alerts`` and recorded in ``monitoring/<uc>_alerts``."""

    alert_id: str
    usecase: str
    window_start: datetime
    window_end: datetime
    bad_windows: int
    windows: int
    reasons: tuple[Reason, ...]
    rule: dict[str, Any]
    created_at: datetime
    retrain: bool = True
    # the champion whose reference profile the monitor judged the windows against (None: not
    # known, e.g. `driftline alerts check`); a retrain skips an alert about an earlier champion
    reference_version: int | None = None

    def summary(self) -> str:
        subjects = sorted({f"{r.source}:{r.subject}" for r in self.reasons})
        return (f"alert {self.alert_id} ({self.usecase}): {self.bad_windows} of {self.windows} windows bad up to "
                f"{_iso(self.window_end)}: {', '.join(subjects)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "usecase": self.usecase, "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end), "bad_windows": self.bad_windows, "windows": self.windows,
            "reasons": [r.to_dict() for r in self.reasons], "rule": self.rule, "retrain": self.retrain,
            "created_at": _iso(self.created_at),
            **({} if self.reference_version is None else {"reference_version": self.reference_version}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Alert:
        """Parse a published alert; ``ValueError`` naming what is missing or malformed."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise UsageError(f"alert: not JSON: {e}") from e
        if not isinstance(data, dict):
            raise UsageError(f"alert: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("alert_id", "usecase", "window_start", "window_end", "created_at") if k not in data]
        if missing:
            raise UsageError(f"alert: missing keys {missing}")
        reasons = tuple(
            Reason(source=r["source"], window_start=_parse(r["window_start"]), window_end=_parse(r["window_end"]),
                   subject=r["subject"], statistic=r["statistic"], value=r.get("value"),
                   threshold=r.get("threshold"), p_adjusted=r.get("p_adjusted"))
            for r in data.get("reasons", [])
        )
        return cls(alert_id=str(data["alert_id"]), usecase=str(data["usecase"]),
                   window_start=_parse(data["window_start"]), window_end=_parse(data["window_end"]),
                   bad_windows=int(data.get("bad_windows", 0)), windows=int(data.get("windows", 0)),
                   reasons=reasons, rule=dict(data.get("rule", {})), created_at=_parse(data["created_at"]),
                   retrain=bool(data.get("retrain", True)),
                   reference_version=None if data.get("reference_version") is None
                   else int(data["reference_version"]))


def _iso(value: datetime) -> str:
    return _utc(value).isoformat()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def alert_id(usecase: str, window_end: datetime) -> str:
    """Deterministic id of the alert firing at ``window_end``: the same windows give the same id.

        >>> alert_id("fraud", datetime(2024, 1, 1, tzinfo=UTC))[:22]
        'fraud-20240101T000000Z'
    """
    end = _utc(window_end)
    digest = hashlib.sha256(f"{usecase}|{end.isoformat()}".encode()).hexdigest()[:10]
    return f"{usecase}-{end.strftime('%Y%m%dT%H%M%SZ')}-{digest}"


def fire_points(windows: Sequence[WindowStatus], rule: AlertRule) -> list[int]:
    """Indices of ``windows`` (ordered by ``window_end``) at which the rule fires.

    With ``n=2, m=3`` and windows good, bad, good, bad, bad it fires at index 3
    (bad, good, bad); index 4 is within the cooldown (default ``m`` windows).
    """
    if not isinstance(rule, AlertRule):
        raise TypeError(f"rule: expected AlertRule, got {type(rule).__name__}")
    _check_order(windows)
    fired: list[int] = []
    for i, window in enumerate(windows):
        if not window.bad:
            continue
        recent = windows[max(0, i - rule.m + 1): i + 1]
        if sum(w.bad for w in recent) < rule.n:
            continue
        if fired and i - fired[-1] <= rule.cooldown:
            continue
        fired.append(i)
    return fired


def tail_fire_points(tail: Sequence[WindowStatus], rule: AlertRule, first: datetime,
                     last_fired: datetime | None = None) -> list[int] | None:
    """The windowed rule: indices of ``tail`` (the newest windows of a history, ordered by
    ``window_end``; what came before is unknown) at which :func:`fire_points` over the whole
    history fires, among the windows ending at or after ``first``; None when the tail is too
    short to tell.

    Whether window ``i`` fires depends on the ``m`` windows up to it and on the last alert
    before it (the cooldown), which depends on the history before. That dependency ends
    after ``cooldown`` windows in a row that cannot fire whatever came before (good, or fewer
    than ``n`` bad among their last ``m``, all inside the tail): the window after them is
    free of any earlier alert. From the first such point the rule is replayed exactly, so the
    answer equals the whole-history one whenever it is not None (with ``cooldown_windows: 0``
    any ``m - 1`` windows of context suffice). With ``n=2, m=3`` and windows
    ``x.x....x.x`` (``x`` bad) the whole history fires at 2 and 9::

        tail_fire_points(ws[2:], AlertRule(), ws[9].window_end)   # [7]: ws[9]
        tail_fire_points(ws[6:], AlertRule(), ws[9].window_end)   # None: too short to tell

    A drift that lasts leaves no such point: every window can fire. ``last_fired``, the
    ``window_end`` of the last alert the whole history raised before ``first`` (the newest
    recorded one), anchors the replay instead, when that window is in the tail with ``m - 1``
    windows before it (so the tail confirms it could fire): the cooldown after it does not
    depend on anything earlier. With ``xxxxxxxxxx`` the whole history fires at 1, 5 and 9::

        tail_fire_points(ws[3:], AlertRule(), ws[9].window_end)                              # None
        tail_fire_points(ws[3:], AlertRule(), ws[9].window_end, last_fired=ws[5].window_end)  # [6]: ws[9]
    """
    if not isinstance(rule, AlertRule):
        raise TypeError(f"rule: expected AlertRule, got {type(rule).__name__}")
    _check_order(tail)
    start = next((i for i, w in enumerate(tail) if _utc(w.window_end) >= _utc(first)), len(tail))
    if start == len(tail):
        return []
    bad = [w.bad for w in tail]

    def can_fire(i: int) -> bool:  # needs the m windows up to i inside the tail
        return bad[i] and sum(bad[i - rule.m + 1: i + 1]) >= rule.n

    free = None  # the first index whose rule does not depend on alerts before the tail
    if rule.cooldown == 0:
        free = rule.m - 1
    else:
        run = 0
        for i in range(rule.m - 1, start):
            run = 0 if can_fire(i) else run + 1
            if run >= rule.cooldown:
                free = i + 1
                break
    fired: list[int] = []
    if free is None or free > start:
        anchor = None if last_fired is None else next(
            (i for i, w in enumerate(tail[:start]) if _utc(w.window_end) == _utc(last_fired)), None)
        if anchor is None or anchor < rule.m - 1 or not can_fire(anchor):
            return None
        free, fired = anchor + 1, [anchor]
    for i in range(free, len(tail)):
        if can_fire(i) and not (fired and i - fired[-1] <= rule.cooldown):
            fired.append(i)
    return [i for i in fired if i >= start]


def _check_order(windows: Sequence[WindowStatus]) -> None:
    ends = [w.window_end for w in windows]
    if any(_utc(a) >= _utc(b) for a, b in zip(ends, ends[1:], strict=False)):
        raise UsageError("windows: expected windows ordered by window_end, each once")


def build_alerts(
    usecase: str, windows: Sequence[WindowStatus], rule: AlertRule, created_at: datetime | None = None,
    points: Sequence[int] | None = None,
) -> list[Alert]:
    """Every alert the rule raises over ``windows`` (see :func:`fire_points`), oldest first;
    or the alerts at ``points`` (indices of ``windows``, e.g. from :func:`tail_fire_points`)."""
    now = created_at or datetime.now(UTC)
    alerts = []
    for i in fire_points(windows, rule) if points is None else points:
        recent = windows[max(0, i - rule.m + 1): i + 1]
        reasons = tuple(r for w in recent for r in w.reasons)
        alerts.append(Alert(
            alert_id=alert_id(usecase, windows[i].window_end), usecase=usecase,
            window_start=_utc(recent[0].window_start), window_end=_utc(windows[i].window_end),
            bad_windows=sum(w.bad for w in recent), windows=len(recent), reasons=reasons,
            rule=rule.describe(), created_at=_utc(now), retrain=rule.retrain,
        ))
    return alerts


# --------------------------------------------------------------------------- monitoring tables -> windows


def monitoring_path(platform: PlatformConfig, uc: UseCaseConfig, kind: str) -> str:
    """``monitoring/<uc>_<kind>`` (kind: drift, quality, performance, alerts)."""
    return catalog.path(platform, kind, uc)


def flagged_rows(frame: pd.DataFrame, source: Source) -> pd.DataFrame:
    """The rows of one monitoring table (a pandas frame of its :data:`REQUIRED_COLUMNS`) in a
    common shape, only its latest computation per window: window_start, window_end (UTC),
    source, flagged, subject, statistic, value, threshold, p_adjusted."""
    if frame.empty:
        return pd.DataFrame(columns=["window_start", "window_end", "source", "flagged", "subject", "statistic",
                                     "value", "threshold", "p_adjusted"])
    f = frame.assign(window_start=pd.to_datetime(frame["window_start"], utc=True),
                     window_end=pd.to_datetime(frame["window_end"], utc=True),
                     computed_at=pd.to_datetime(frame["computed_at"], utc=True))
    latest = f.groupby(["window_start", "window_end"])["computed_at"].transform("max")
    f = f[f["computed_at"] == latest]  # a null computed_at is never the latest, as in SQL
    if source == "drift":
        flag, subject, statistic, p_adjusted = f["drifted"], f["feature"], f["statistic"], f["p_adjusted"]
    elif source == "quality":
        flag, statistic = f["breached"], f["metric"]
        subject, p_adjusted = f["column"].where(f["column"].notna(), f["metric"]), None
    else:
        flag, subject, statistic, p_adjusted = f["breached"], f["metric"], f["metric"], None

    def text(col: pd.Series) -> pd.Series:
        return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))

    def number(col: pd.Series | None) -> pd.Series:
        return pd.Series(None if col is None else pd.to_numeric(col, errors="coerce"), index=f.index,
                         dtype="float64")

    return pd.DataFrame({
        "window_start": f["window_start"], "window_end": f["window_end"], "source": source,
        "flagged": flag.astype(object).where(flag.notna(), False).astype(bool),
        "subject": text(subject), "statistic": text(statistic), "value": number(f["value"]),
        "threshold": number(f["threshold"]), "p_adjusted": number(p_adjusted),
    })


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def window_statuses(flagged: pd.DataFrame) -> list[WindowStatus]:
    """One status per window (start, end), ordered by end then start, with its flagged rows as
    ``reasons`` (sorted by source, subject, statistic)."""
    out = []
    for (start, end), group in flagged.groupby(["window_start", "window_end"], sort=False):
        t0, t1 = start.to_pydatetime(), end.to_pydatetime()
        rows = group[group["flagged"]]
        reasons = tuple(
            Reason(source=r.source, window_start=t0, window_end=t1, subject=r.subject or "",
                   statistic=r.statistic or "", value=_none_if_nan(r.value), threshold=_none_if_nan(r.threshold),
                   p_adjusted=_none_if_nan(r.p_adjusted))
            for r in sorted(rows.itertuples(index=False),
                            key=lambda r: (r.source, r.subject or "", r.statistic or ""))
        )
        out.append(WindowStatus(t0, t1, reasons))
    return sorted(out, key=lambda w: (w.window_end, w.window_start))


def _monitoring_rows(path: str, columns: Sequence[str], since: datetime | None) -> pd.DataFrame | None:
    """``columns`` of the monitoring table at ``path`` read with delta-rs (no Spark job: the
    monitor evaluates the rule while its queries run), only rows with ``window_end`` at or
    after ``since`` when given (a filter on the table's own column: files whose statistics
    end earlier are skipped); None without a table, or when it lacks one of ``columns``."""
    import pyarrow.dataset as ds

    table = local_table(path)
    if table is None:
        log.info("alerts: no table at %s yet", path)
        return None
    names = set(pa.schema(table.schema().to_arrow()).names)
    missing = [c for c in columns if c not in names]
    if missing:
        log.warning("alerts: %s lacks columns %s; not used for alerts", path, missing)
        return None
    if since is None:
        return arrow_table(table, columns).to_pandas()
    if in_object_store(table):
        data = arrow_table(table, columns)
        return data.filter(ds.field("window_end") >= _utc(since)).to_pandas()
    dataset = table.to_pyarrow_dataset()
    bound = pa.scalar(_utc(since), type=dataset.schema.field("window_end").type)
    return dataset.to_table(columns=list(columns), filter=ds.field("window_end") >= bound).to_pandas()


def read_windows(
    platform: PlatformConfig, uc: UseCaseConfig, sources: Sequence[Source] = SOURCES,
    since: datetime | None = None,
) -> list[WindowStatus]:
    """Every monitored window of the use case with the reasons it is bad, oldest first; with
    ``since``, only the windows ending at or after it. Read with delta-rs and pandas: the
    tables hold a few rows per window, and the stream monitor evaluates the rule beside its
    queries, where each Spark job would queue behind theirs.

    A missing table, or one without the contract's columns, is skipped with a log line."""
    parts = []
    for source in sources:
        rows = _monitoring_rows(monitoring_path(platform, uc, source), REQUIRED_COLUMNS[source], since)
        if rows is not None:
            parts.append(flagged_rows(rows, source))
    parts = [p for p in parts if not p.empty]
    if not parts:
        return []
    out = window_statuses(pd.concat(parts, ignore_index=True))
    # the same window_end with another start would be ambiguous for the rule: keep the widest window
    by_end: dict[datetime, WindowStatus] = {}
    for w in out:
        kept = by_end.get(w.window_end)
        if kept is None:
            by_end[w.window_end] = w
        else:
            start = min(kept.window_start, w.window_start)
            by_end[w.window_end] = WindowStatus(start, w.window_end, kept.reasons + w.reasons)
    return [by_end[end] for end in sorted(by_end)]


# --------------------------------------------------------------------------- record and publish

ALERTS_COLUMNS = tuple(ALERTS_SCHEMA.fieldNames())


def alerts_frame(spark: SparkSession, alerts: Sequence[Alert], topic: str) -> DataFrame:
    """The alerts as rows of :data:`ALERTS_SCHEMA` (times are aware UTC datetimes, stored as such)."""
    rows = [
        (a.alert_id, a.usecase, a.window_start, a.window_end, a.bad_windows, a.windows, int(a.rule.get("n", 0)),
         int(a.rule.get("m", 0)), int(a.rule.get("cooldown_windows", 0)), a.retrain,
         [(r.source, _utc(r.window_start), _utc(r.window_end), r.subject, r.statistic, r.value, r.threshold,
           r.p_adjusted) for r in a.reasons],
         topic, a.created_at)
        for a in alerts
    ]
    return spark.createDataFrame(rows, ALERTS_SCHEMA)


def recorded_ids(path: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the alerts table at ``path`` already holds (delta-rs)."""
    table = local_table(path) if ids else None
    if table is None:
        return set()
    return set(arrow_table(table, ["alert_id"]).column("alert_id").to_pylist()) & set(ids)


def last_recorded(path: str, before: datetime) -> datetime | None:
    """The ``window_end`` of the newest alert the table at ``path`` holds ending before ``before`` (delta-rs)."""
    table = local_table(path)
    if table is None:
        return None
    ends = [_utc(t) for t in arrow_table(table, ["window_end"]).column("window_end").to_pylist() if t is not None]
    earlier = [t for t in ends if t < _utc(before)]
    return max(earlier) if earlier else None


def publish(platform: PlatformConfig, topic: str, alerts: Sequence[Alert], timeout_s: float = 30.0) -> None:
    """Publish each alert as JSON (key: its id) and wait for the broker's acknowledgement;
    :class:`BrokerError` when any was not acknowledged."""
    from driftline.kafka.clients import ensure_topics, make_producer

    ensure_topics(platform.kafka, [topic])
    producer = make_producer(platform.kafka)
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for a in alerts:
        producer.produce(topic, key=a.alert_id.encode(), value=a.to_json().encode(), on_delivery=on_delivery)
    left = producer.flush(timeout_s)
    if left or errors:
        raise BrokerError(f"publishing {len(alerts)} alerts to {topic}: {left} unacknowledged, errors {errors[:3]}")


def lookback(rule: AlertRule, window_s: int) -> timedelta:
    """How far before the first changed window a windowed evaluation reads: ``2 * (m + cooldown)``
    windows of event time, room for :func:`tail_fire_points` to find its starting point even
    with a few windows missing (no events)."""
    return timedelta(seconds=2 * (rule.m + rule.cooldown) * window_s)


def rule_alerts(
    usecase: str, rule: AlertRule, read: Callable[[datetime | None], list[WindowStatus]], since: datetime | None,
    window_s: int, now: datetime | None = None, last_alert: Callable[[datetime], datetime | None] | None = None,
) -> list[Alert]:
    """The alerts the rule raises, read through ``read(bound)`` (the windows ending at or after
    ``bound``, None: all). With ``since`` None: over the whole history. With ``since``: the
    alerts at windows ending at or after it, from the windows read since :func:`lookback`
    before it (:func:`tail_fire_points`); when those do not settle the rule (a drift that
    lasts), from the windows since the last recorded alert before ``since``
    (``last_alert(since)``: its ``window_end``, None when there is none), which anchors the
    cooldown; only when neither settles it, from the whole history (the alerts before
    ``since`` too; recorded ones are filtered later)."""
    points: list[int] | None = None
    if since is not None:
        bound = _utc(since) - lookback(rule, window_s)
        windows = read(bound)
        points = tail_fire_points(windows, rule, since)
        anchor = last_alert(_utc(since)) if points is None and last_alert is not None else None
        if anchor is not None:
            context = _utc(anchor) - timedelta(seconds=rule.m * window_s)
            if context < bound:
                windows = read(context)
            points = tail_fire_points(windows, rule, since, last_fired=anchor)
        if points is None:
            log.info("alerts %s: the %d windows read before %s do not settle the rule; reading the whole "
                     "history", usecase, len(windows), _iso(since))
    if points is None:
        windows = read(None)
    alerts = build_alerts(usecase, windows, rule, now, points)
    scope = "the whole history" if points is None else f"the windows from {_iso(since or _now())}"
    log.info("alerts %s: %d windows read (%d bad), rule %s: %d alerts in %s", usecase, len(windows),
             sum(w.bad for w in windows), rule.describe(), len(alerts), scope)
    return alerts


def evaluate_alerts(
    spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, *, now: datetime | None = None,
    dry_run: bool = False, since: datetime | None = None, reference_version: int | None = None,
) -> list[Alert]:
    """Apply the use case's rule to its monitoring tables; publish and record the alerts
    not raised before, and return them (empty when nothing new fired). ``dry_run``
    returns every alert the rule raises over the history and publishes nothing.

    ``since`` (the stream monitor's evaluations): the earliest ``window_end`` written since
    the last evaluation that published and recorded everything. Only the windows from
    :func:`lookback` before it are read and :func:`tail_fire_points` decides, which gives
    the alerts the whole history would (windows before ``since`` are unchanged, and their
    alerts were recorded then); when that tail cannot tell, the whole history is read.
    ``reference_version``: the champion the windows were judged against, carried by each
    new alert (see :attr:`Alert.reference_version`).

    Example::

        for alert in evaluate_alerts(spark, platform, load_usecase("fraud")):
            print(alert.summary())
    """
    rule = alert_rule(uc)
    path = monitoring_path(platform, uc, "alerts")
    alerts = rule_alerts(uc.name, rule, lambda bound: read_windows(platform, uc, rule.sources, since=bound),
                         None if dry_run else since, uc.drift.window_s, now,
                         last_alert=lambda before: last_recorded(path, before))
    if dry_run:
        return alerts
    known = recorded_ids(path, [a.alert_id for a in alerts])
    new = [replace(a, reference_version=reference_version) for a in alerts if a.alert_id not in known]
    if not new:
        return []
    topic = uc.topic("alerts")
    publish(platform, topic, new)
    for a in new:
        subjects = sorted({f"{r.source}:{r.subject}" for r in a.reasons})
        log.info("ALERT %s published to %s: use case %s, windows %s .. %s, %d of %d bad: %s", a.alert_id, topic,
                 a.usecase, _iso(a.window_start), _iso(a.window_end), a.bad_windows, a.windows, ", ".join(subjects))
    merge_new_rows(spark, alerts_frame(spark, new, topic), path, keys=["alert_id"])
    return new


class AlertEvaluator:
    """The rule, evaluated as the stream monitor's windows close.

    One per :func:`driftline.monitoring.start_monitor` call, shared by the window emitters
    of its sources (events, predictions, performance), whose queries run in parallel
    threads of one driver. :meth:`windows_closed` runs ``evaluate`` (normally
    :func:`evaluate_alerts`) under a lock, so two sources closing windows at the same time
    evaluate one after the other, and the second finds the first's alerts recorded: each
    alert is published once. Only closures that wrote a table the rule reads
    (``drift.alert.sources``) evaluate.

    ``evaluate(since)`` gets the earliest ``window_end`` written since the last evaluation
    that succeeded (a windowed evaluation, see :func:`tail_fire_points`), or None the first
    time (the whole history: windows a crashed run wrote but never evaluated are covered).
    An evaluation that fails (the broker is down) is logged and retried, from the same
    windows, at the next closure; with ``raise_errors`` (the end of a run) it raises.

    Example::

        alerts = AlertEvaluator(uc.name, uc.drift.alert,
                                lambda since: evaluate_alerts(spark, platform, uc, since=since))
        alerts.windows_closed([window_end], {"drift": 77})   # [Alert(...)] or []
    """

    def __init__(self, usecase: str, rule: AlertRule, evaluate: Callable[[datetime | None], Sequence[Alert]]) -> None:
        if not isinstance(rule, AlertRule):
            raise TypeError(f"rule: expected AlertRule, got {type(rule).__name__}")
        self.usecase = usecase
        self.rule = rule
        self._evaluate = evaluate
        self._lock = threading.Lock()
        self._pending: datetime | None = None  # earliest window_end written and not yet evaluated
        self._settled = False                  # the whole history was evaluated once
        self.published: list[Alert] = []       # every alert this evaluator published, oldest first
        self.evaluations = 0

    def reads(self, tables: Iterable[str]) -> bool:
        """Whether the rule reads any of these monitoring tables."""
        return bool(set(tables) & set(self.rule.sources))

    def windows_closed(self, ends: Iterable[datetime], tables: Iterable[str], *, raise_errors: bool = False
                       ) -> list[Alert]:
        """Windows ending at ``ends`` were written to ``tables`` (names, or a mapping whose
        non-zero entries count); evaluate the rule and return the alerts published now."""
        wrote = [t for t in tables if not isinstance(tables, Mapping) or tables[t]]
        closed = [_utc(e) for e in ends]
        if not closed or not self.reads(wrote):
            return []
        with self._lock:
            first = min(closed)
            self._pending = first if self._pending is None else min(self._pending, first)
            since = self._pending if self._settled else None
            try:
                new = list(self._evaluate(since))
            except Exception:
                if raise_errors:
                    raise
                log.exception("alerts %s: evaluating the rule failed; retried with the next windows (from %s)",
                              self.usecase, _iso(self._pending))
                return []
            self._pending, self._settled = None, True
            self.evaluations += 1
            self.published.extend(new)
            return new

    def retry(self) -> list[Alert]:
        """Evaluate again if the last evaluation failed (raising its error this time); for the
        end of a run that stops by itself. Returns the alerts published now."""
        with self._lock:
            pending = self._pending
        if pending is None:
            return []
        return self.windows_closed([pending], self.rule.sources, raise_errors=True)


def list_alerts(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The recorded alerts at ``path``, newest ``window_end`` first, read with delta-rs
    (no Spark needed). Empty when there is no table yet."""
    rows = rows_local(path)
    rows.sort(key=lambda r: (r["window_end"], r["alert_id"]), reverse=True)
    return rows[:limit] if limit else rows


# --------------------------------------------------------------------------- data loss


def data_loss_alert(usecase: str, gaps: Sequence[Gap], at: datetime | None = None) -> Alert:
    """The alert for offsets Kafka deleted before the scoring query read them (skipped, as
    ``streaming.fail_on_data_loss: false`` allows; see :mod:`driftline.kafka.gaps`). Not a
    drift alert: ``retrain`` is false, ``window_start``/``window_end`` are when it was found,
    and each reason names one range: source ``kafka``, subject
    ``<topic> partition <p> offsets <first>..<last>``, statistic ``offsets_lost``, value the
    count. Its id is derived from the ranges, so a replayed batch records it once."""
    if not gaps:
        raise UsageError("gaps: expected at least one lost offset range")
    now = _utc(at or _now())
    ranges = sorted((g.topic, g.partition, g.start, g.end) for g in gaps)
    digest = hashlib.sha256(f"{usecase}|{ranges}".encode()).hexdigest()[:10]
    reasons = tuple(Reason(source="kafka", window_start=now, window_end=now, subject=g.text(),
                           statistic="offsets_lost", value=float(g.count)) for g in sorted(gaps))
    return Alert(alert_id=f"{usecase}-data-loss-{digest}", usecase=usecase, window_start=now, window_end=now,
                 bad_windows=0, windows=0, reasons=reasons, rule={}, created_at=now, retrain=False)


def record_data_loss(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, gaps: Sequence[Gap]) -> Alert:
    """Publish a :func:`data_loss_alert` to ``<uc>.alerts`` and record it in
    ``monitoring/<uc>_alerts`` (MERGE on ``alert_id``), as :func:`evaluate_alerts` does."""
    alert = data_loss_alert(uc.name, gaps)
    topic = uc.topic("alerts")
    publish(platform, topic, [alert])
    log.warning("ALERT %s published to %s: use case %s lost %d Kafka offsets (deleted before they were read): %s",
                alert.alert_id, topic, uc.name, sum(g.count for g in gaps), "; ".join(g.text() for g in gaps))
    merge_new_rows(spark, alerts_frame(spark, [alert], topic), monitoring_path(platform, uc, "alerts"),
                   keys=["alert_id"])
    return alert
