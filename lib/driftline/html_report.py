"""``driftline report``: a use case's monitoring as one self-contained HTML file.

Everything is read with delta-rs (:mod:`driftline.report`'s loaders; no Spark, no JVM)
and, when its store is there, from the MLflow registry. Each chart is a matplotlib
figure embedded as inline SVG (text kept as text), so the file opens offline in any
browser, needs no JavaScript and can be mailed or archived as it is::

    path = build_report(platform, "fraud")            # <lake_root>/../reports/fraud.html
    build_report(platform, "fraud", out="/tmp/fraud.html")

Each chart is a ``<figure id="chart-<name>">`` (names in :data:`CHARTS`) with a
caption; a chart without data is replaced by one line ``<p id="empty-<name>">`` that
says which table is missing. Below the charts, the champion's model card
(:mod:`driftline.model_card`: intended use, training data, test metrics per slice, feature
weights, known limits) as tables, or a ``<p class="note">`` saying why there is none. The pure data shaping (PSI trends, routing steps,
champion periods, score shares, per-version online metrics, delivery evidence, bad windows) is in
plain functions here, tested in ``tests/unit/test_html_report.py``.
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from driftline import drift as drift_stats
from driftline import report
from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.errors import UsageError

# Every chart the report can hold: id suffix -> heading. The order is the page's.
CHARTS: dict[str, str] = {
    "drift-heatmap": "Drift per feature and window",
    "psi-trend": "PSI per feature over time",
    "score-distribution": "Score distribution: reference vs current",
    "route-timeline": "Routing and model versions over time",
    "champion-challenger": "Champion vs challenger",
    "performance": "Online performance per window",
    "throughput": "Throughput",
    "latency": "Event-to-prediction latency",
    "validation": "Quality rates of validation runs",
    "quality": "Input and output quality per window",
    "alerts": "Bad windows and alerts",
}

ACTION_COLORS = {"register": "tab:gray", "promote": "tab:green", "rollback": "tab:red",
                 "gate_refused": "tab:orange", "route": "tab:blue", "retrain_triggered": "tab:purple",
                 "shadow_start": "tab:gray", "ramp": "tab:cyan", "retire": "tab:red"}
_ROUTING = re.compile(r"->\s*(?P<mode>[a-z_]+)\s*/\s*(?P<share>[0-9.eE+-]+)")
_ROUTING_BEFORE = re.compile(r"routing\s+(?P<mode>[a-z_]+)\s*/\s*(?P<share>[0-9.eE+-]+)\s*->")


# --------------------------------------------------------------------------- data shaping (pure)


def psi_trend_frame(drift: pd.DataFrame, statistic: str = "psi") -> pd.DataFrame:
    """The ``statistic`` rows of ``monitoring/<uc>_drift`` shaped for
    :func:`driftline.report.plot_window_metrics`: one ``metric`` per feature (the
    score's row is ``score (prediction)``), ``window_start``, ``value``, ``threshold``
    and ``drifted`` (that statistic's own decision), in time order.

    Example::

        psi_trend_frame(drift).query("metric == 'amount'")["value"]
    """
    rows = drift[drift["statistic"] == statistic]
    label = rows["feature"].astype(str)
    if "kind" in rows.columns:
        label = label.where(rows["kind"] != "prediction", label + " (prediction)")
    out = pd.DataFrame({
        "window_start": rows["window_start"], "metric": label, "value": rows["value"].astype("float64"),
        "threshold": rows["threshold"].astype("float64"), "drifted": rows["drifted"].fillna(False).astype(bool),
    })
    return out.sort_values(["metric", "window_start"]).reset_index(drop=True)


def parse_routing(reason: str | None) -> tuple[str, float] | None:
    """``(mode, share)`` a ``route`` audit event moved to, from its reason
    (``routing shadow/1 -> canary/0.05``); None when the text is not a routing change.

        >>> parse_routing("routing shadow/1 -> canary/0.05")
        ('canary', 0.05)
    """
    match = _ROUTING.search(reason or "")
    return None if match is None else (match["mode"], float(match["share"]))


def routing_steps(events: pd.DataFrame) -> pd.DataFrame:
    """The routing in force from each ``route`` event of ``audit/<uc>_model_events`` on:
    ``time``, ``mode`` (champion, shadow, canary) and ``share`` (the canary's share of
    entities), in time order. The routing before the first change (from that event's
    reason) is the first row, at the first audit event's time.

    Example::

        routing_steps(events).iloc[-1]["mode"]   # what scores now
    """
    ordered = events.sort_values("event_time")
    rows: list[dict[str, Any]] = []
    for _, ev in ordered[ordered["action"] == "route"].iterrows():
        after = parse_routing(ev.get("reason"))
        if after is None:
            continue
        if not rows:
            before = _ROUTING_BEFORE.search(str(ev.get("reason") or ""))
            if before is not None:
                rows.append({"time": ordered["event_time"].iloc[0], "mode": before["mode"],
                             "share": float(before["share"])})
        rows.append({"time": ev["event_time"], "mode": after[0], "share": after[1]})
    frame = pd.DataFrame(rows, columns=["time", "mode", "share"])
    # the same instant twice (the assumed start and a change at the first event): keep the change
    return frame.drop_duplicates("time", keep="last").reset_index(drop=True)


def champion_periods(events: pd.DataFrame) -> pd.DataFrame:
    """Which version was champion when: one row per ``promote``/``rollback`` of the audit
    table with ``version``, ``start`` and ``end`` (NaT while it still is champion).

    Example::

        champion_periods(events)  # version 1 from 12:01, version 2 from 14:30
    """
    moves = events[events["action"].isin(["promote", "rollback"]) & events["to_version"].notna()]
    moves = moves.sort_values("event_time")
    starts = list(moves["event_time"])
    out = pd.DataFrame({
        "version": [int(v) for v in moves["to_version"]],
        "start": starts,
        "end": [*starts[1:], pd.NaT],
    })
    return out.astype({"start": "datetime64[ns]", "end": "datetime64[ns]"})


def served_versions(predictions: pd.DataFrame, windows: pd.DataFrame) -> pd.Series:
    """For each row of ``windows`` (``window_start``, ``window_end``; tumbling, not
    overlapping) the model versions of the served predictions whose event time falls in
    it, as ``v1`` or ``v1+v2`` (a canary); ``<NA>`` for a window no served prediction falls in.

    Example::

        served_versions(preds, performance[["window_start", "window_end"]])
    """
    served = predictions[predictions["served"].fillna(False).astype(bool)] if "served" in predictions else predictions
    keys = ["window_start", "window_end"]
    unique = windows[keys].drop_duplicates().sort_values("window_start").reset_index(drop=True)
    starts, ends = unique["window_start"].to_numpy(), unique["window_end"].to_numpy()
    times = served["event_time"].to_numpy()
    pos = np.searchsorted(starts, times, side="right") - 1
    inside = (pos >= 0) & (times < ends[np.clip(pos, 0, None)]) if len(starts) else np.zeros(len(times), bool)
    found = pd.DataFrame({"w": pos[inside], "v": served["model_version"].to_numpy()[inside]}).dropna()
    labels = found.groupby("w")["v"].agg(lambda v: "+".join(f"v{int(x)}" for x in sorted(set(v))))
    unique["versions"] = labels.reindex(unique.index)  # positions in ``unique``
    merged = windows[keys].merge(unique, on=keys, how="left")  # a left merge keeps the order of ``windows``
    return pd.Series(merged["versions"].to_numpy(), index=windows.index, dtype="object")


def score_bins(edges: Sequence[float]) -> list[str]:
    """Labels of the bins a profile's interior ``edges`` make: ``<e0``, ``e0–e1``, …, ``≥en``.

        >>> score_bins([0.5])
        ['<0.5', '≥0.5']
    """
    e = [f"{float(x):.3g}" for x in edges]
    if not e:
        return ["all"]
    return [f"<{e[0]}", *(f"{a}–{b}" for a, b in zip(e[:-1], e[1:], strict=True)), f"≥{e[-1]}"]


def score_shares(predictions: pd.DataFrame | None, edges: Sequence[float],
                 reference: Sequence[float] | None = None, reference_label: str = "reference") -> pd.DataFrame:
    """Share of scores per bin (rows, :func:`score_bins`) for the reference counts (a
    profile's ``prediction.counts``) and each route and model version of ``predictions``
    (columns such as ``champion v1``), binned as the monitor does
    (``searchsorted(edges, score, side='right')``). Each column sums to 1.

    Example::

        score_shares(preds, profile["prediction"]["edges"], profile["prediction"]["counts"])
    """
    labels = score_bins(edges)
    columns: dict[str, np.ndarray] = {}
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        if len(ref) != len(labels):
            raise UsageError(f"reference: expected {len(labels)} bin counts for {len(edges)} edges, got {len(ref)}")
        columns[reference_label] = ref / ref.sum() if ref.sum() > 0 else ref
    if predictions is not None and not predictions.empty:
        for (route, version), group in _route_groups(predictions):
            scores = group["score"].dropna().to_numpy(dtype=np.float64)
            if len(scores) == 0:
                continue
            counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), scores, side="right"),
                                 minlength=len(labels)).astype(np.float64)
            columns[_version_label(route, version)] = counts / counts.sum()
    return pd.DataFrame(columns, index=pd.Index(labels, name="bin"))


def _route_groups(predictions: pd.DataFrame) -> list[tuple[tuple[str, Any], pd.DataFrame]]:
    rank = {r: i for i, r in enumerate(report.ROUTE_ORDER)}
    groups = [((str(route), version), g) for (route, version), g
              in predictions.groupby(["route", "model_version"], dropna=False)]
    return sorted(groups, key=lambda kv: (rank.get(kv[0][0], len(rank)), str(kv[0][1])))


def _version_label(route: str, version: Any) -> str:
    return f"{route} v{int(version)}" if pd.notna(version) else route


def online_metrics_by_version(predictions: pd.DataFrame, labels: pd.DataFrame, *, event_id: str, label: str,
                              kind: str) -> pd.DataFrame:
    """Each route and model version's metrics on the events whose label has arrived
    (``silver/<uc>_labels``), shadow rows included, so a challenger in shadow is measured
    on the same events as the champion: ``route``, ``model_version``, ``n`` and ROC AUC,
    precision, recall (binary; a row's ``prediction`` is its version's decision) or RMSE, MAE.

    Example::

        online_metrics_by_version(preds, labels, event_id="event_id", label="is_fraud", kind="binary")
    """
    known = labels[[event_id, label]].dropna().drop_duplicates(event_id, keep="last")
    joined = predictions.merge(known.rename(columns={event_id: "event_id", label: "_label"}), on="event_id")
    rows = []
    for (route, version), g in _route_groups(joined):
        y = g["_label"].astype("float64").to_numpy()
        row: dict[str, Any] = {"route": route, "model_version": version, "n": len(g)}
        if kind == "binary":
            pred = g["prediction"].astype("float64").to_numpy()
            tp = float(((pred == 1) & (y == 1)).sum())
            fp = float(((pred == 1) & (y == 0)).sum())
            fn = float(((pred == 0) & (y == 1)).sum())
            row.update({"roc_auc": drift_stats.roc_auc(y, g["score"].astype("float64")),
                        **drift_stats.confusion_metrics(tp, fp, fn)})
        else:
            row.update(drift_stats.regression_metrics(y, g["score"].astype("float64")))
        rows.append(row)
    return pd.DataFrame(rows)


# test metrics that are counts (confusion cells, rows): in the registry, not on a chart of rates
COUNT_METRICS = frozenset({"rows", "tp", "fp", "tn", "fn"})


def alias_versions(versions: pd.DataFrame | None, events: pd.DataFrame | None) -> dict[str, int]:
    """``{"champion": v, "challenger": w}`` (either may be missing): the registry's aliases
    (:func:`driftline.report.registry_versions`) when given, else from the audit: the last
    ``promote``/``rollback`` and the last ``register``."""
    out: dict[str, int] = {}
    if versions is not None and not versions.empty:
        for alias in ("champion", "challenger"):
            hit = versions[versions["aliases"].str.split(", ").map(lambda a, x=alias: x in a)]
            if not hit.empty:
                out[alias] = int(hit["version"].iloc[0])
    elif events is not None and not events.empty:
        champions = champion_periods(events)
        if len(champions):
            out["champion"] = int(champions["version"].iloc[-1])
        registered = events[(events["action"] == "register") & events["to_version"].notna()].sort_values("event_time")
        if len(registered):
            out["challenger"] = int(registered["to_version"].iloc[-1])
    return out


def registered_metrics(versions: pd.DataFrame | None, events: pd.DataFrame | None) -> pd.DataFrame:
    """Test metrics of the champion and the challenger (rows ``champion v1``, ``challenger v2``;
    one row when both aliases name the same version), counts (:data:`COUNT_METRICS`) left
    out: the registry's ``test_*`` metrics when ``versions`` is given, else what the audit's
    latest ``register`` event of each version recorded. Empty when neither knows."""
    aliases = alias_versions(versions, events)
    rows: dict[str, dict[str, float]] = {}
    for alias, version in aliases.items():
        if alias == "challenger" and version == aliases.get("champion"):
            continue
        metrics: dict[str, Any] = {}
        if versions is not None and not versions.empty:
            r = versions[versions["version"] == version].iloc[0]
            metrics = {c[len("test_"):]: r[c] for c in versions.columns if c.startswith("test_") and pd.notna(r[c])}
        elif events is not None:
            mine = events[(events["action"] == "register") & (events["to_version"] == version)].sort_values("event_time")
            metrics = _as_dict(mine["metrics"].iloc[-1]) if len(mine) else {}
        rows[f"{alias} v{version}"] = {k: float(v) for k, v in metrics.items() if k not in COUNT_METRICS}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return frame.reindex(columns=sorted(frame.columns))


def _as_dict(value: Any) -> dict[str, Any]:
    """A Delta MAP column's value as a dict (delta-rs gives a list of pairs)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {k: v for k, v in value}


def validation_rates(validation: pd.DataFrame) -> pd.DataFrame:
    """``run_time``, ``dataset``, ``quarantine_rate``, ``duplicate_rate``, records in and
    quarantined and ``status`` of each validate run (``monitoring/<uc>_validation``), in time order."""
    cols = ["run_time", "dataset", "records_in", "records_quarantined", "quarantine_rate", "duplicate_rate", "status"]
    return validation[cols].sort_values(["run_time", "dataset"]).reset_index(drop=True)


def quarantine_reasons(validation: pd.DataFrame | None, stream: pd.DataFrame | None) -> pd.DataFrame:
    """Quarantined records per reason: ``batch`` (summed over the validate runs'
    ``reason_counts``) and ``stream`` (``quarantine/<uc>_events_stream`` rows per
    ``reason``), most frequent first; empty when neither has any."""
    batch: dict[str, int] = {}
    if validation is not None:
        for counts in validation["reason_counts"]:
            for reason, n in _as_dict(counts).items():
                batch[reason] = batch.get(reason, 0) + int(n)
    streamed: dict[str, int] = {}
    if stream is not None and "reason" in stream.columns:
        streamed = {str(k): int(v) for k, v in stream["reason"].value_counts().items()}
    frame = pd.DataFrame({"batch": pd.Series(batch, dtype="int64"), "stream": pd.Series(streamed, dtype="int64")})
    frame = frame.fillna(0).astype("int64")
    frame.index.name = "reason"
    return frame.assign(_t=frame.sum(axis=1)).sort_values(["_t"], ascending=False).drop(columns="_t")


def bad_windows(drift: pd.DataFrame | None, quality: pd.DataFrame | None,
                performance: pd.DataFrame | None) -> pd.DataFrame:
    """Per window (in time order) what made it bad, as the alert rule counts it:
    ``drifted`` features, breached ``quality`` rows and breached ``performance`` rows."""
    parts = []
    if drift is not None and not drift.empty:
        d = drift.assign(_x=drift["drifted"].fillna(False).astype(bool))
        per = d.groupby(["window_start", "window_end", "feature"])["_x"].any().groupby(
            level=["window_start", "window_end"]).sum().rename("drifted")
        parts.append(per)
    for name, frame in (("quality", quality), ("performance", performance)):
        if frame is not None and not frame.empty:
            f = frame.assign(_x=frame["breached"].fillna(False).astype(bool))
            parts.append(f.groupby(["window_start", "window_end"])["_x"].sum().rename(name))
    cols = ["window_start", "window_end", "drifted", "quality", "performance"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, axis=1).fillna(0).astype("int64").reset_index()
    for c in cols[2:]:
        if c not in out.columns:
            out[c] = 0
    return out[cols].sort_values("window_start").reset_index(drop=True)


def auto_freq(start: pd.Timestamp, end: pd.Timestamp, buckets: int = 60) -> str:
    """The smallest of 1s, 10s, 1min, 5min, 15min, 1h, 6h, 1D that splits ``[start, end]``
    into at most ``buckets`` buckets (1D for anything longer).

        >>> auto_freq(pd.Timestamp("2024-05-01 12:00"), pd.Timestamp("2024-05-01 13:00"))
        '1min'
    """
    span = (pd.Timestamp(end) - pd.Timestamp(start)) / pd.Timedelta(seconds=1)
    for freq in ("1s", "10s", "1min", "5min", "15min", "1h", "6h"):
        if span / pd.Timedelta(freq).total_seconds() <= buckets:
            return freq
    return "1D"


def time_range(frames: Sequence[tuple[pd.DataFrame | None, str, str]]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """``(first, last)`` over ``(frame, start column, end column)`` triples (None frames
    skipped), or None when there is no time at all."""
    lows, highs = [], []
    for frame, start, end in frames:
        if frame is None or frame.empty:
            continue
        lows.append(frame[start].min())
        highs.append(frame[end].max())
    lows = [t for t in lows if pd.notna(t)]
    highs = [t for t in highs if pd.notna(t)]
    return (min(lows), max(highs)) if lows and highs else None


# --------------------------------------------------------------------------- loading


@dataclass
class ReportData:
    """What the report shows, loaded once. ``tables`` maps a short key to its frame
    (None: no table or empty); ``notes`` says why a frame is None."""

    usecase: UseCaseConfig
    tables: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    versions: pd.DataFrame | None = None
    registry_note: str = ""
    profile: dict[str, Any] | None = None
    profile_note: str = ""
    card: dict[str, Any] | None = None  # the champion's model card (driftline.model_card)
    card_note: str = ""

    def get(self, key: str) -> pd.DataFrame | None:
        return self.tables.get(key)

    def note(self, *keys: str) -> str:
        return "; ".join(self.notes[k] for k in keys if k in self.notes)


TABLES: dict[str, tuple[str, str]] = {  # key -> (layer, name template)
    "predictions": ("predictions", "{uc}"),
    "drift": ("monitoring", "{uc}_drift"),
    "quality": ("monitoring", "{uc}_quality"),
    "performance": ("monitoring", "{uc}_performance"),
    "alerts": ("monitoring", "{uc}_alerts"),
    "validation": ("monitoring", "{uc}_validation"),
    "queries": ("monitoring", "queries"),
    "events": ("audit", "{uc}_model_events"),
    "quarantine_stream": ("quarantine", "{uc}_events_stream"),
    "labels": ("silver", "{uc}_labels"),
    "delivery": ("monitoring", "{uc}_delivery"),
}


def _query_of(names: pd.Series, uc: str) -> pd.Series:
    """Query names that name the use case as a word (``score-fraud``, ``monitor-fraud-events``)."""
    pattern = rf"(?:^|[-_.]){re.escape(uc)}(?:[-_.]|$)"
    return names.fillna("").str.contains(pattern, regex=True)


def load_data(platform: PlatformConfig, usecase: str | UseCaseConfig) -> ReportData:
    """Read every table the report shows (delta-rs), the registry and the champion's
    reference profile (MLflow, when its store exists and answers)."""
    uc = usecase if isinstance(usecase, UseCaseConfig) else load_usecase(usecase)
    data = ReportData(uc)
    for key, (layer, template) in TABLES.items():
        name = template.format(uc=uc.name)
        columns = [uc.event_id, uc.label.field] if key == "labels" else None
        frame = report.load_table(platform, layer, name, columns)
        if frame is not None and key == "queries":
            frame = frame[_query_of(frame["query_name"], uc.name)]
        if frame is None or frame.empty:
            what = "no table yet" if frame is None else ("no query of this use case" if key == "queries" else "empty")
            data.notes[key] = f"{layer}/{name}: {what}"
            frame = None
        data.tables[key] = frame
    _load_registry(platform, data, str(usecase) if isinstance(usecase, str) else uc.name)
    return data


@contextlib.contextmanager
def _quick_mlflow() -> Iterator[None]:
    """A tracking server that does not answer should cost seconds, not MLflow's minutes of retries
    (values the user set win)."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no progress bar on stderr for one small file
    saved = {k: os.environ.get(k) for k in quick}
    for key, value in quick.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _load_registry(platform: PlatformConfig, data: ReportData, usecase: str) -> None:
    uri = platform.mlflow.resolved_tracking_uri(Path(platform.base_dir))
    try:
        with _quick_mlflow():
            data.versions = report.registry_versions(platform, usecase)
    except Exception as e:  # any failure of an optional source: the report says so and goes on
        data.registry_note = f"MLflow registry at {uri} not reachable ({_first_line(e)})"
        return
    if data.versions is None:
        data.registry_note = f"no MLflow store at {uri}"
        return
    if data.versions.empty:
        # list_versions reads "no model" into a failed lookup too: ask the store something it must answer
        try:
            from driftline.registry import client_for

            with _quick_mlflow():
                client_for(platform).search_registered_models(max_results=1)
        except Exception as e:  # as above
            data.versions = None
            data.registry_note = f"MLflow registry at {uri} not reachable ({_first_line(e)})"
            return
        data.registry_note = f"no registered version of {data.usecase.name}-model"
        return
    if not data.versions["aliases"].str.contains("champion").any():
        data.profile_note = "no champion, so no reference profile"
        return
    try:
        from driftline.monitoring import load_reference_profile

        with _quick_mlflow():
            data.profile = load_reference_profile(platform, data.usecase)
    except Exception as e:  # the reference is optional: the chart shows the current scores alone
        data.profile_note = f"the champion's reference profile could not be read ({_first_line(e)})"
    try:
        from driftline.model_card import load_model_card

        with _quick_mlflow():
            data.card = load_model_card(platform, data.usecase)
        if data.card is None:
            data.card_note = "the champion was registered without a model card (retrain to get one)"
    except Exception as e:  # the card is optional, as the profile
        data.card_note = f"the champion's model card could not be read ({_first_line(e)})"


# --------------------------------------------------------------------------- figures


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 11.0, height: float = 3.0,
            sharex: bool = False) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)


def _bars(ax: Any, x: np.ndarray, values: np.ndarray, width: float, **kwargs: Any) -> None:
    """Bars labelled with their value; an undefined value (NaN) is an empty bar labelled n/a."""
    bars = ax.bar(x, np.nan_to_num(values, nan=0.0), width, **kwargs)
    ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.3g}" for v in values], fontsize="x-small", padding=2)


_EXTRA_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def series_colors(labels: Sequence[str]) -> list[str]:
    """A colour per series label (``champion v1``, ``shadow v2``, ``reference …``): the
    route's colour for the first series of each route, other colours for more versions
    of the same route (a champion replaced during the period), black for a reference.

        >>> series_colors(["reference (champion v2)", "champion v1", "champion v2", "shadow v3"])
        ['black', 'tab:blue', 'tab:green', 'tab:gray']
    """
    out: list[str] = []
    spare = iter(_EXTRA_COLORS * (1 + len(labels) // len(_EXTRA_COLORS)))
    for label in labels:
        route = label.split(" ")[0]
        if route == "reference":
            out.append("black")
        elif route in report.ROUTE_COLORS and report.ROUTE_COLORS[route] not in out:
            out.append(report.ROUTE_COLORS[route])
        else:
            out.append(next(spare))
    return out


def plot_score_shares(shares: pd.DataFrame, title: str) -> Figure:
    """Grouped bars: share of scores per bin, one bar per column of :func:`score_shares`."""
    fig, axes = _figure(height=3.4)
    ax = axes[0, 0]
    x = np.arange(len(shares.index))
    width = 0.8 / max(1, len(shares.columns))
    for i, (col, color) in enumerate(zip(shares.columns, series_colors(list(shares.columns)), strict=True)):
        style = {"fill": False, "edgecolor": "black", "hatch": "///", "linewidth": 0.8} if color == "black" \
            else {"color": color, "alpha": 0.85}
        ax.bar(x + (i - (len(shares.columns) - 1) / 2) * width, shares[col], width, label=col, **style)
    ax.set_xticks(x, list(shares.index), rotation=30, ha="right", fontsize="small")
    ax.set(title=title, xlabel="score bin", ylabel="share of scores")
    ax.legend(fontsize="small")
    return fig


def plot_route_timeline(events: pd.DataFrame | None, predictions: pd.DataFrame | None, freq: str) -> Figure:
    """Top: the share of events per route and model version (from the predictions, per
    ``freq`` bucket of scoring time), the canary share the routing asked for (step line)
    and shadow-mode periods (shaded). Bottom: every audit event on its action's lane,
    numbered as in the evidence table, with the version it moved to."""
    fig, axes = _figure(2, 1, height=2.8, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    ends = [f[c].max() for f, c in ((events, "event_time"), (predictions, "scoring_time")) if f is not None]
    end = max(ends) if ends else None
    if predictions is not None:
        shares = report.route_shares(predictions, freq=freq)
        series = list(shares.groupby(["route", "model_version"], dropna=False, sort=False))
        colors = series_colors([_version_label(str(route), version) for (route, version), _ in series])
        for ((route, version), group), color in zip(series, colors, strict=True):
            top.plot(group["time"], group["share"], marker="o", markersize=3, color=color,
                     linestyle="--" if route in ("shadow", "control") else "-",
                     label=f"observed {_version_label(str(route), version)}")
    if events is not None:
        steps = routing_steps(events)
        if len(steps) and end is not None:
            times = [*steps["time"], max(end, steps["time"].iloc[-1])]
            canary = [s if m == "canary" else 0.0 for m, s in zip(steps["mode"], steps["share"], strict=True)]
            top.step(times, [*canary, canary[-1]], where="post", color="black", linewidth=1.2,
                     label="configured canary share")
            for i, mode in enumerate(steps["mode"]):
                if mode == "shadow":
                    top.axvspan(times[i], times[i + 1], color="tab:gray", alpha=0.15,
                                label="shadow mode" if i == list(steps["mode"]).index("shadow") else None)
        ordered = events.sort_values("event_time").reset_index(drop=True)
        actions = sorted(ordered["action"].unique())
        lane = {a: i for i, a in enumerate(actions)}
        for i, (_, ev) in enumerate(ordered.iterrows(), start=1):
            y = lane[ev["action"]]
            bottom.scatter([ev["event_time"]], [y], s=40, zorder=3, color=ACTION_COLORS.get(ev["action"], "black"))
            text = f"#{i}" + (f" v{int(ev['to_version'])}" if pd.notna(ev["to_version"]) else "")
            bottom.annotate(text, (ev["event_time"], y), textcoords="offset points", xytext=(4, 5), fontsize="x-small")
        bottom.set_yticks(range(len(actions)), actions)
        bottom.set_ylim(-0.7, len(actions) - 0.3)
    top.set(title="share of events per route and model version", ylabel="share", ylim=(-0.02, 1.08))
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    bottom.set(title="model registry events (numbers: the evidence table)", xlabel="time (UTC)")
    bottom.tick_params(axis="x", labelrotation=30, labelsize="small")
    return fig


def plot_version_metrics(tests: pd.DataFrame, online: pd.DataFrame | None) -> Figure:
    """Left: test metrics of champion and challenger (grouped bars per metric); right
    (when labels have arrived): the same for each route and version on labelled online events."""
    panels = [("test split (registry)", tests)]
    if online is not None and not online.empty:
        frame = online.assign(_l=[f"{_version_label(r, v)} (n={n})" for r, v, n
                                  in zip(online["route"], online["model_version"], online["n"], strict=True)])
        panels.append(("labelled online events", frame.set_index("_l").drop(columns=["route", "model_version", "n"])))
    panels = [(t, f) for t, f in panels if not f.empty]
    fig, axes = _figure(1, len(panels), height=3.4)
    for ax, (title, frame) in zip(axes.flat, panels, strict=True):
        metrics = list(frame.columns)
        x = np.arange(len(metrics))
        width = 0.8 / max(1, len(frame.index))
        colors = series_colors([str(who) for who in frame.index])
        for i, ((who, row), color) in enumerate(zip(frame.iterrows(), colors, strict=True)):
            _bars(ax, x + (i - (len(frame.index) - 1) / 2) * width, row.astype("float64").to_numpy(), width,
                  label=str(who), color=color)
        ax.set_xticks(x, metrics, rotation=20, fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.legend(fontsize="x-small")
        ax.margins(y=0.15)
    return fig


def plot_throughput_from_predictions(predictions: pd.DataFrame, freq: str) -> Figure:
    """Predictions per ``freq`` bucket of scoring time, per route."""
    fig, axes = _figure()
    ax = axes[0, 0]
    counts = predictions.assign(time=predictions["scoring_time"].dt.floor(freq)).groupby(["time", "route"]).size()
    for route, series in counts.groupby(level="route"):
        ax.plot(series.index.get_level_values("time"), series.to_numpy(), marker=".",
                color=report.ROUTE_COLORS.get(str(route)), label=str(route))
    ax.set(title=f"predictions per {freq} of scoring time", ylabel="predictions")
    ax.legend(fontsize="small")
    return fig


def plot_validation(rates: pd.DataFrame | None, reasons: pd.DataFrame) -> Figure:
    """Left: quarantine and duplicate rate of each validate run per dataset; right:
    quarantined records per reason, batch validation and the scoring query."""
    panels = int(rates is not None) + int(not reasons.empty)
    fig, axes = _figure(1, panels, height=3.4)
    flat = list(axes.flat)
    if rates is not None:
        ax = flat.pop(0)
        runs = sorted(rates["run_time"].unique())
        pos = {t: i for i, t in enumerate(runs)}
        for (dataset, rate), style in zip(
                [(d, r) for d in sorted(rates["dataset"].unique()) for r in ("quarantine_rate", "duplicate_rate")],
                ["-o", "--s", "-^", "--v", "-d", "--x"] * 4, strict=False):
            rows = rates[rates["dataset"] == dataset]
            ax.plot(rows["run_time"].map(pos), rows[rate], style, label=f"{dataset} {rate.replace('_', ' ')}")
        ax.set_xticks(range(len(runs)), [pd.Timestamp(t).strftime("%m-%d %H:%M") for t in runs],
                      rotation=30, fontsize="small")
        ax.set(title="rates per validate run", xlabel="run (UTC)", ylabel="share of records")
        ax.legend(fontsize="x-small")
    if not reasons.empty:
        ax = flat.pop(0)
        y = np.arange(len(reasons.index))
        for i, col in enumerate(reasons.columns):
            bars = ax.barh(y + (i - 0.5) * 0.4, reasons[col], 0.4, label=col)
            ax.bar_label(bars, fontsize="x-small", padding=2)
        ax.set_yticks(y, list(reasons.index), fontsize="small")
        ax.invert_yaxis()
        ax.set(title="quarantined records per reason", xlabel="records")
        ax.legend(fontsize="x-small")
    return fig


def plot_bad_windows(windows: pd.DataFrame, alerts: pd.DataFrame | None) -> Figure:
    """Stacked bars per window: drifted features, breached quality and performance rows;
    each alert's span shaded and numbered as in the alerts table (newest is #1)."""
    fig, axes = _figure(height=3.2)
    ax = axes[0, 0]
    width = ((windows["window_end"] - windows["window_start"]) / pd.Timedelta(days=1)).to_numpy() * 0.9
    bottom = np.zeros(len(windows))
    for col, color in (("drifted", "tab:red"), ("quality", "tab:orange"), ("performance", "tab:purple")):
        values = windows[col].to_numpy(dtype=np.float64)
        ax.bar(windows["window_start"], values, width, bottom=bottom, align="edge", color=color,
               label={"drifted": "drifted features", "quality": "breached quality rows",
                      "performance": "breached performance rows"}[col])
        bottom += values
    if alerts is not None:
        for i, (_, a) in enumerate(report.alert_table(alerts).iterrows(), start=1):
            ax.axvspan(a["window_start"], a["window_end"], color="tab:red", alpha=0.08)
            ax.axvline(a["window_end"], color="tab:red", linestyle="--", linewidth=0.8)
            ax.annotate(f"alert #{i}", (a["window_end"], 1.0), xycoords=("data", "axes fraction"),
                        textcoords="offset points", xytext=(-4, -10), ha="right", fontsize="x-small", color="tab:red")
    ax.set(title="what made each window bad (shaded: the windows an alert covers)", ylabel="count",
           xlabel="window start (UTC)")
    ax.legend(fontsize="x-small")
    ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    return fig


def figure_svg(fig: Figure, name: str) -> str:
    """The figure as an inline ``<svg>`` element: text kept as text (searchable, no glyph
    definitions), every id (and reference to one) prefixed with ``name``, so that several
    figures on one page never share an id (matplotlib numbers ``figure_1``, ``axes_1``… per
    figure), and the same figure gives the same text (no date, a fixed hash salt)."""
    buf = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "driftline"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):].strip(), count=1, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", svg)
    return re.sub(r'href="#([^"]+)"', rf'href="#{name}-\1"', svg)


# --------------------------------------------------------------------------- sections


@dataclass
class Chart:
    """One chart of the page: a figure with its caption, or the line that says why there is none."""

    name: str
    caption: str
    figure: Figure | None = None
    empty: str = ""
    extra_html: str = ""  # a table under the chart (evidence, alerts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None or value is pd.NA or (not isinstance(value, str) and pd.isna(value)) else str(value)


def html_table(frame: pd.DataFrame, table_id: str) -> str:
    """``frame`` as an escaped HTML table (numbers to 4 significant digits, times to the second)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _drift_charts(data: ReportData, statistic: str) -> list[Chart]:
    drift = data.get("drift")
    if drift is None:
        return [Chart("drift-heatmap", "", empty=data.note("drift")), Chart("psi-trend", "", empty=data.note("drift"))]
    known = sorted(drift["statistic"].dropna().unique())
    if statistic not in known:
        raise UsageError(f"statistic: {statistic!r} is not in the drift table; expected one of {known}")
    heatmap = Chart(
        "drift-heatmap",
        f"{statistic} of each monitored feature (rows; the model's score as 'score') per event-time window "
        "(columns) against the champion's reference profile; × marks a window where the feature drifted "
        "(effect above its threshold and Benjamini–Hochberg adjusted p-value below drift.alpha).",
        figure=report.plot_drift_heatmap(*report.drift_matrix(drift, statistic), statistic))
    psi = psi_trend_frame(drift)
    trend = Chart("psi-trend", "PSI per feature over event-time windows; dashed: the feature's threshold "
                  "(calibrated or drift.psi), red ×: windows where PSI counted as drift.",
                  empty="no psi rows in the drift table")
    if not psi.empty:
        trend.figure = report.plot_window_metrics(psi, "PSI per feature", flag="drifted")
    return [heatmap, trend]


def _score_chart(data: ReportData) -> Chart:
    uc, preds = data.usecase, data.get("predictions")
    if preds is None:
        return Chart("score-distribution", "", empty=data.note("predictions"))
    reference = (data.profile or {}).get("prediction")
    if data.profile and reference:
        shares = score_shares(preds, list(reference["edges"]), reference["counts"],
                              f"reference (champion v{data.profile.get('model_version')})")
        why = "the reference is the score distribution logged with the champion's model (its scores on the training history)"
    else:
        scores = preds["score"].dropna()
        low, high = (0.0, 1.0) if uc.label.kind == "binary" or scores.empty else (float(scores.min()),
                                                                                  float(scores.max()))
        shares = score_shares(preds, list(np.linspace(low, high, 11)[1:-1]) if high > low else [])
        why = f"no reference: {data.profile_note or data.registry_note or 'no reference profile'}"
    return Chart("score-distribution",
                 f"Share of scores per bin (the monitor's bins) for every route and model version of "
                 f"predictions/{uc.name}; {why}.", figure=plot_score_shares(shares, "scores: reference vs current"))


def _timeline_chart(data: ReportData, freq: str) -> Chart:
    uc, preds, events = data.usecase, data.get("predictions"), data.get("events")
    chart = Chart("route-timeline",
                  f"Top: share of events each route and model version scored ({freq} buckets of scoring time), "
                  "the canary share the routing asked for and shadow-mode periods; bottom: every registry event "
                  f"of audit/{uc.name}_model_events, numbered as in the table below (its evidence: the reason "
                  "and the metrics recorded with it).",
                  empty=data.note("events", "predictions"))
    if events is None and preds is None:
        return chart
    chart.figure = plot_route_timeline(events, preds, freq)
    if events is not None:
        ev = events.sort_values("event_time").reset_index(drop=True)
        evidence = pd.DataFrame({
            "#": range(1, len(ev) + 1), "time (UTC)": ev["event_time"], "action": ev["action"],
            "from": ev["from_version"], "to": ev["to_version"], "reason": ev["reason"],
            "metrics": ev["metrics"].map(lambda m: ", ".join(f"{k}={v:.4g}" for k, v in sorted(_as_dict(m).items()))),
        })
        chart.extra_html = html_table(evidence, "table-model-events")
    delivery = data.get("delivery")
    if delivery is not None:
        chart.extra_html += (f"<p>Progressive delivery: every evaluation of monitoring/{uc.name}_delivery (the last "
                             f"{DELIVERY_ROWS}), both models on the same labelled events of the stage.</p>"
                             + html_table(delivery_evidence(delivery).tail(DELIVERY_ROWS), "table-delivery"))
    return chart


DELIVERY_ROWS = 50


def delivery_evidence(delivery: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation of ``monitoring/<uc>_delivery`` (its champion and challenger rows
    side by side): stage, share, versions, labelled events, both metric values, the test's
    difference, SE, bound, p-value, verdict and the step taken, oldest first."""
    keys = ["evaluated_at"]
    champ = delivery[delivery["model"] == "champion"][[*keys, "model_version", "value"]]
    chall = delivery[delivery["model"] == "challenger"]
    both = chall.merge(champ, on=keys, how="left", suffixes=("", "_champion")).sort_values("evaluated_at")
    return pd.DataFrame({
        "time (UTC)": both["evaluated_at"], "stage": both["stage"], "share": both["share"],
        "champion": "v" + both["model_version_champion"].astype("Int64").astype(str),
        "challenger": "v" + both["model_version"].astype("Int64").astype(str),
        "labelled": both["n"], "positives": both["positives"], "metric": both["metric"],
        "champion value": both["value_champion"], "challenger value": both["value"],
        "test": both["test"], "look": both["look"], "difference": both["difference"], "SE": both["se"],
        "bound": both["bound"], "p-value": both["p_value"], "verdict": both["verdict"], "action": both["action"],
    }).reset_index(drop=True)


def _versions_chart(data: ReportData) -> Chart:
    uc, preds, labels = data.usecase, data.get("predictions"), data.get("labels")
    tests = registered_metrics(data.versions, data.get("events"))
    online = None
    if preds is not None and labels is not None:
        online = online_metrics_by_version(preds, labels, event_id=uc.event_id, label=uc.label.field,
                                           kind=uc.label.kind)
    has_online = online is not None and not online.empty
    if tests.empty and not has_online:
        return Chart("champion-challenger", "", empty="no model versions to compare: "
                     + (data.registry_note or "registry empty") + (f"; {data.note('events')}" if data.note("events")
                                                                    else ""))
    source = ("the MLflow registry" if data.versions is not None and not data.versions.empty
              else f"the register events of audit/{uc.name}_model_events ({data.registry_note})")
    right = ("right: each route and version on the online events whose label has arrived "
             f"(silver/{uc.name}_labels), shadow rows included, at each version's own decision threshold"
             if has_online else f"no online comparison: {data.note('labels', 'predictions') or 'no labelled events'}")
    left = f"left: test metrics of the champion and the challenger from {source}" if not tests.empty else         "no test metrics (registry empty)"
    return Chart("champion-challenger", f"{left[0].upper()}{left[1:]}; {right}.",
                 figure=plot_version_metrics(tests, online if has_online else None))


def _performance_chart(data: ReportData) -> Chart:
    uc, performance, preds = data.usecase, data.get("performance"), data.get("predictions")
    if performance is None:
        return Chart("performance", "", empty=data.note("performance"))
    split = "The table has no model version column."
    perf = performance
    if preds is not None:
        served = served_versions(preds, performance[["window_start", "window_end"]])
        perf = performance.assign(column=("served by " + served).fillna("no served prediction"))
        split = ("The table has no model version column: each window is labelled with the versions that served "
                 f"its events in predictions/{uc.name} (one line per label: "
                 + ", ".join(sorted(perf["column"].unique())) + ").")
    return Chart("performance", f"Online metrics per event-time window from monitoring/{uc.name}_performance "
                 f"(served predictions joined with their labels); dashed: the limit, red ×: breached. {split}",
                 figure=report.plot_window_metrics(perf, "online performance"))


def _operations_charts(data: ReportData, freq: str) -> list[Chart]:
    preds, queries = data.get("predictions"), data.get("queries")
    if queries is not None:
        throughput = Chart("throughput", "Processed rows per second and batch duration of each micro-batch of this "
                           "use case's streaming queries (monitoring/queries).",
                           figure=report.plot_query_metrics(queries))
    elif preds is not None:
        throughput = Chart("throughput", f"Predictions per {freq} of scoring time (no query metrics: "
                           f"{data.note('queries')}).", figure=plot_throughput_from_predictions(preds, freq))
    else:
        throughput = Chart("throughput", "", empty=data.note("queries", "predictions"))
    latency = Chart("latency", "Event-to-prediction latency of served predictions (scoring time − Kafka timestamp); "
                    "p50, p95 and p99 marked.",
                    empty=data.note("predictions") or "no served prediction with a Kafka timestamp")
    if preds is not None and not report.latency_ms(preds).empty:
        latency.figure = report.plot_latency(preds)
    return [throughput, latency]


def _quality_charts(data: ReportData) -> list[Chart]:
    uc, validation, quality = data.usecase, data.get("validation"), data.get("quality")
    reasons = quarantine_reasons(validation, data.get("quarantine_stream"))
    rates = validation_rates(validation) if validation is not None else None
    checks = Chart("validation", f"Quarantine and duplicate rates of each validate run "
                   f"(monitoring/{uc.name}_validation) and the quarantined records per reason, batch validation and "
                   f"the scoring query (quarantine/{uc.name}_events_stream).",
                   empty=data.note("validation", "quarantine_stream"))
    if rates is not None or not reasons.empty:
        checks.figure = plot_validation(rates, reasons)
    windows = Chart("quality", f"Input and output quality per event-time window (monitoring/{uc.name}_quality): "
                    "volume, missing, quarantine and null-prediction rates, score range; dashed: the limit, "
                    "red ×: breached.", empty=data.note("quality"))
    if quality is not None:
        windows.figure = report.plot_window_metrics(quality, "input and output quality")
    return [checks, windows]


def _alerts_chart(data: ReportData) -> Chart:
    uc, alerts = data.usecase, data.get("alerts")
    windows = bad_windows(data.get("drift"), data.get("quality"), data.get("performance"))
    chart = Chart("alerts", "Drifted features and breached quality and performance rows per window (what the N-of-M "
                  f"rule counts); shaded: the windows each alert of monitoring/{uc.name}_alerts covers, numbered as "
                  "in the table below (newest first).", empty=data.note("drift", "quality", "performance"))
    if not windows.empty and (windows[["drifted", "quality", "performance"]].to_numpy().sum() > 0 or alerts is not None):
        chart.figure = plot_bad_windows(windows, alerts)
    elif not windows.empty:
        chart.empty = (f"none of the {len(windows)} windows was bad: no drifted feature, no breached quality or "
                       "performance row")
    if alerts is None:
        chart.extra_html = f'<p class="empty" id="empty-alerts-table">{html.escape(data.note("alerts"))}</p>'
    else:
        table = report.alert_table(alerts)
        chart.extra_html = html_table(table.assign(**{"#": range(1, len(table) + 1)})[["#", *table.columns]],
                                      "table-alerts")
    return chart


def build_charts(data: ReportData, statistic: str = "psi") -> list[Chart]:
    """Every chart of :data:`CHARTS`, in order, from loaded :class:`ReportData`."""
    span = time_range([(data.get("predictions"), "scoring_time", "scoring_time"),
                       (data.get("events"), "event_time", "event_time")])
    freq = auto_freq(*span) if span else "1min"
    charts = [*_drift_charts(data, statistic), _score_chart(data), _timeline_chart(data, freq),
              _versions_chart(data), _performance_chart(data), *_operations_charts(data, freq),
              *_quality_charts(data), _alerts_chart(data)]
    assert [c.name for c in charts] == list(CHARTS), "every chart once, in CHARTS order"
    return charts


# --------------------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:0 16px 48px;
color:#222;line-height:1.4}
header{border-bottom:2px solid #ddd;margin-bottom:8px}
h1{margin:18px 0 4px}h2{margin-top:36px;border-bottom:1px solid #eee}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0 12px}
dl.summary dt{font-weight:600}dl.summary dd{margin:0}
nav ul{columns:3;padding-left:18px;margin:4px 0}
figure{margin:8px 0 0}figure svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:.9em;margin-top:4px}
p.empty{color:#8a6d3b;background:#fcf8e3;padding:6px 10px;border-radius:4px}
p.note{color:#555;background:#f5f5f5;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;font-size:.85em;margin:10px 0;width:100%}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f5f5f5}
"""


def _summary(data: ReportData, generated: datetime, platform: PlatformConfig) -> list[tuple[str, str]]:
    uc = data.usecase
    preds, drift, alerts = data.get("predictions"), data.get("drift"), data.get("alerts")
    items = [("use case", uc.name), ("lake", platform.path(platform.lake_root))]
    aliases = alias_versions(data.versions, data.get("events"))
    tests = registered_metrics(data.versions, data.get("events"))
    for alias, version in aliases.items():
        if alias == "challenger" and version == aliases.get("champion"):
            items.append((alias, f"v{version} (the champion: no other version waiting)"))
            continue
        row = tests.loc[f"{alias} v{version}"] if f"{alias} v{version}" in tests.index else pd.Series(dtype="float64")
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if pd.notna(v))
        items.append((alias, f"v{version} — test {metrics}" if metrics else f"v{version}"))
    if not aliases:
        items.append(("models", data.registry_note or "no model versions"))
    elif data.registry_note:
        items.append(("registry", data.registry_note + " (versions from the audit table)"))
    events = data.get("events")
    if events is not None:
        steps = routing_steps(events)
        if len(steps):
            last = steps.iloc[-1]
            items.append(("routing", f"{last['mode']}" + (f" {last['share']:g}" if last["mode"] == "canary" else "")
                          + f" since {_fmt(last['time'])} UTC"))
    event_span = time_range([(preds, "event_time", "event_time"), (drift, "window_start", "window_end"),
                             (data.get("quality"), "window_start", "window_end"),
                             (data.get("performance"), "window_start", "window_end")])
    items.append(("event time covered", f"{_fmt(event_span[0])} – {_fmt(event_span[1])} UTC" if event_span
                  else "no predictions or monitoring windows yet"))
    processing = time_range([(preds, "scoring_time", "scoring_time"), (events, "event_time", "event_time"),
                             (data.get("queries"), "timestamp", "timestamp")])
    if processing:
        items.append(("processing time covered", f"{_fmt(processing[0])} – {_fmt(processing[1])} UTC"))
    if preds is not None:
        lat = report.latency_percentiles(preds)
        items.append(("predictions", f"{len(preds):,} rows, {preds['event_id'].nunique():,} events; latency "
                      + " ".join(f"{k} {v:,.0f} ms" for k, v in lat.items() if not math.isnan(v))))
    if drift is not None:
        windows = report.drifted_windows(drift)
        items.append(("drift", f"{int((windows['drifted'] > 0).sum())} of {len(windows)} windows with a drifted feature"))
    items.append(("alerts", f"{0 if alerts is None else len(alerts)} alert" + ("" if alerts is not None and len(alerts) == 1 else "s")))
    items.append(("generated at", f"{generated.strftime('%Y-%m-%d %H:%M:%S')} UTC"))
    return items


def model_card_section(data: ReportData) -> str:
    """The champion's model card (:mod:`driftline.model_card`) as HTML tables: intended use,
    training data, test metrics overall and per slice, feature weights (the 20 largest) and
    known limits; or one note (``p.note``, not a missing chart) saying why there is none."""
    esc = html.escape
    head = '<section id="section-model-card"><h2>Model card of the champion</h2>'
    card = data.card
    if card is None:
        why = data.card_note or data.profile_note or data.registry_note or "no champion"
        return f'{head}<p class="note" id="note-model-card">{esc(why)}</p></section>'
    kind = card["label"]["kind"]
    from driftline.model_card import CARD_METRICS

    cols = [*CARD_METRICS[kind], "rows", *(("positives",) if kind == "binary" else ())]
    rows = [{"slice": "overall", **{c: card["metrics"]["overall"].get(c) for c in cols}, "note": ""}]
    rows += [{"slice": f"{s['column']}={s['value']}", **{c: s.get(c) for c in cols},
              "note": "too few rows to judge" if s["too_small"] else ""} for s in card["metrics"]["slices"]]
    data_rows = pd.DataFrame([{"role": t["role"], "table": t.get("path") or t.get("topic") or t.get("file"),
                               "Delta version": t.get("version"),
                               "rows": ", ".join(f"{k} {v}" for k, v in (t.get("rows") or {}).items())}
                              for t in card["training_data"]])
    weights = card["feature_weights"]
    threshold = card.get("decision_threshold")
    return "".join([
        head,
        f'<p id="card-title">{esc(card["model"])} v{card["version"]}: {esc(card["estimator"])} for '
        f'{esc(card["label"]["field"])} ({esc(kind)}), MLflow run {esc(card["run_id"])}, written {esc(card["created"])}'
        + (f"; decision threshold {threshold:.4g}" if threshold is not None else "") + ".</p>",
        f'<h3>Intended use</h3><p id="card-intended-use">{esc(card["intended_use"])}</p>',
        "<h3>Training data</h3>", html_table(data_rows, "table-card-data"),
        "<h3>Test metrics, overall and per slice</h3>", html_table(pd.DataFrame(rows), "table-card-metrics"),
        f"<h3>Feature {esc(weights['kind'])}</h3><p>{esc(weights.get('note', ''))}</p>",
        html_table(pd.DataFrame(weights["values"][:20], columns=["feature", "value"]), "table-card-weights"),
        '<h3>Known limits</h3><ul id="card-limits">', "".join(f"<li>{esc(x)}</li>" for x in card["limits"]),
        "</ul></section>",
    ])


def render_html(data: ReportData, charts: Sequence[Chart], platform: PlatformConfig, generated: datetime) -> str:
    """The whole page: summary header, contents, one section per chart."""
    uc = data.usecase.name
    esc = html.escape
    summary = "".join(f'<dt>{esc(k)}</dt><dd>{esc(v)}</dd>' for k, v in _summary(data, generated, platform))
    nav = "".join(f'<li><a href="#section-{c.name}">{esc(CHARTS[c.name])}</a></li>' for c in charts)
    nav += '<li><a href="#section-model-card">Model card of the champion</a></li>'
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>driftline report: {esc(uc)}</title><style>{_CSS}</style></head><body>",
        f'<header><h1>driftline report: {esc(uc)}</h1><dl class="summary" id="summary">{summary}</dl>',
        f"<nav><ul>{nav}</ul></nav></header><main>",
    ]
    for c in charts:
        parts.append(f'<section id="section-{c.name}"><h2>{esc(CHARTS[c.name])}</h2>')
        if c.figure is not None:
            parts.append(f'<figure id="chart-{c.name}">{figure_svg(c.figure, c.name)}'
                         f"<figcaption>{esc(c.caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="empty" id="empty-{c.name}">{esc(c.empty or "no data yet")}</p>')
        parts.append(c.extra_html + "</section>")
    parts.append(model_card_section(data))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def default_path(platform: PlatformConfig, usecase: str) -> Path:
    """``<lake_root>/../reports/<uc>.html`` for a local lake (``.driftline/reports/fraud.html``
    by default); ``<project>/.driftline/reports/<uc>.html`` when the lake is a URI (s3a://…)."""
    lake = platform.path(platform.lake_root)
    if "://" in lake:
        return Path(platform.path(".driftline")) / "reports" / f"{usecase}.html"
    return Path(lake).parent / "reports" / f"{usecase}.html"


def build_report(platform: PlatformConfig, usecase: str | UseCaseConfig, out: str | Path | None = None,
                 statistic: str = "psi", now: datetime | None = None) -> Path:
    """Write the report of ``usecase`` to ``out`` (default :func:`default_path`) and return its path.

    Example::

        build_report(load_platform(), "fraud")   # PosixPath('.../.driftline/reports/fraud.html')
    """
    data = load_data(platform, usecase)
    path = Path(out) if out is not None else default_path(platform, data.usecase.name)
    charts = build_charts(data, statistic)
    page = render_html(data, charts, platform, now or datetime.now(UTC))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path.resolve()
