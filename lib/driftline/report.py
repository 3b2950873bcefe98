"""A use case's outputs as pandas frames and matplotlib figures, for notebooks.

Tables are read with delta-rs (``deltalake``, through :func:`driftline.delta.read_local`):
no Spark session, no JVM, a second or two for the demo's tables. Every loader returns ``None`` for a table that
does not exist yet, so a notebook can skip a section with a one-line note.
Timestamps come back as naive UTC (``datetime64``), whatever wrote them.

The ``plot_*`` functions return a :class:`matplotlib.figure.Figure` that is not
registered with pyplot (no global state, nothing shown twice); the last
expression of a notebook cell displays it::

    platform = load_platform()
    preds = load_table(platform, "predictions", "fraud")
    latency_percentiles(preds)          # p50 / p95 / p99 event-to-prediction latency, ms
    plot_latency(preds)                 # a Figure

See ``notebooks/driftline_overview.ipynb``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure

from driftline.catalog import usecase_tables
from driftline.config import PlatformConfig
from driftline.delta import local_table, read_local, rows_in
from driftline.errors import UsageError

# served: champion, challenger (canary); unserved: shadow (challenger), control (champion, beside a canary)
ROUTE_ORDER = ("champion", "challenger", "shadow", "control")
ROUTE_COLORS = {"champion": "tab:blue", "challenger": "tab:orange", "shadow": "tab:gray", "control": "tab:cyan"}


# --------------------------------------------------------------------------- loading


# Integer columns stay integers when they hold nulls (a version, a count), instead of floats.
_NULLABLE_INTS: dict[pa.DataType, Any] = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
}


def _naive_utc(df: pd.DataFrame) -> pd.DataFrame:
    """Time-zone-aware columns (Spark's TIMESTAMP) as naive UTC, so that all tables compare."""
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def load_table(
    platform: PlatformConfig, layer: str, name: str, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """The Delta table ``<lake_root>/<layer>/<name>`` as a pandas frame (only ``columns``
    when given), or ``None`` when there is no table there yet.

    Example::

        load_table(platform, "monitoring", "fraud_drift")
    """
    if not layer or not name:
        raise UsageError(f"layer, name: expected a table such as ('predictions', 'fraud'), got {(layer, name)!r}")
    frame = read_local(platform.table_path(layer, name), columns, types_mapper=_NULLABLE_INTS.get)
    return None if frame is None else _naive_utc(frame)


def table_counts(platform: PlatformConfig, usecase: str) -> pd.DataFrame:
    """Rows and Delta version of every table of ``usecase``, indexed by ``layer/name``;
    ``<NA>`` for a table not written yet, in catalog order (:func:`driftline.catalog.usecase_tables`).

    Example::

        table_counts(platform, "fraud").loc["predictions/fraud", "rows"]  # 20000
    """
    if not usecase:
        raise UsageError("usecase: expected a use-case name, e.g. 'fraud'")
    tables = usecase_tables(usecase)
    rows: list[dict[str, Any]] = []
    for layer, name in tables:
        table = local_table(platform.table_path(layer, name))
        count = None if table is None else rows_in(table)
        version = None if table is None else int(table.version())
        rows.append({"table": f"{layer}/{name}", "rows": count, "version": version})
    out = pd.DataFrame(rows, columns=["table", "rows", "version"]).astype({"rows": "Int64", "version": "Int64"})
    return out.set_index("table")


def registry_versions(platform: PlatformConfig, usecase: str) -> pd.DataFrame | None:
    """The versions of ``<usecase>-model`` (newest first: version, aliases, test metrics,
    run id, created), or ``None`` when the platform's local MLflow store does not exist
    (it is not created just to look). Needs MLflow (imports :mod:`driftline.registry`).

    Example::

        registry_versions(platform, "fraud")
    """
    uri = platform.mlflow.resolved_tracking_uri(Path(platform.base_dir))
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None
    from driftline.config import load_usecase

    with warnings.catch_warnings():
        # MLflow imports tqdm.auto, which warns in a notebook without ipywidgets
        warnings.simplefilter("ignore")
        from driftline.registry import list_versions

    rows = list_versions(platform, load_usecase(usecase))
    table = pd.DataFrame([
        {"version": r["version"], "aliases": ", ".join(r["aliases"]),
         **{f"test_{k}": v for k, v in sorted(r["metrics"].items())},
         "run_id": r["run_id"], "created": pd.to_datetime(r["created"], unit="ms")}
        for r in rows
    ])
    return table


# --------------------------------------------------------------------------- online predictions


def _served(predictions: pd.DataFrame) -> pd.DataFrame:
    if "served" in predictions.columns:
        return predictions[predictions["served"].fillna(False).astype(bool)]
    return predictions


def latency_ms(predictions: pd.DataFrame) -> pd.Series:
    """Event-to-prediction latency of each served prediction (``scoring_time -
    kafka_timestamp``) in milliseconds; shadow rows repeat an event and are left out.

    Example::

        latency_ms(preds).max()
    """
    served = _served(predictions)
    delta = served["scoring_time"] - served["kafka_timestamp"]
    return (delta.dt.total_seconds() * 1000.0).dropna().rename("latency_ms")


def latency_percentiles(predictions: pd.DataFrame, percentiles: Sequence[float] = (50, 95, 99)) -> pd.Series:
    """Percentiles (linear interpolation) of :func:`latency_ms`, indexed ``p50``, ``p95``,
    ``p99``; NaN when there is no served prediction.

    Example::

        latency_percentiles(preds)["p95"]  # 1830.0
    """
    for p in percentiles:
        if not 0 <= p <= 100:
            raise UsageError(f"percentiles: expected values in [0, 100], got {p!r}")
    values = latency_ms(predictions).to_numpy(dtype=np.float64)
    index = [f"p{p:g}" for p in percentiles]
    if len(values) == 0:
        return pd.Series([math.nan] * len(index), index=index, name="latency_ms")
    return pd.Series(np.percentile(values, list(percentiles)), index=index, name="latency_ms")


def route_shares(predictions: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Prediction rows per ``route`` and ``model_version``, and their ``share`` of the
    distinct events (in shadow mode both the champion and the shadow reach 1.0; in a
    5% canary the champion has 0.95 and the challenger 0.05). With ``freq`` (a pandas
    offset such as ``'1min'``) the same per ``time`` bucket of ``scoring_time``.

    Example::

        route_shares(preds)  # route, model_version, events, share
        route_shares(preds, freq="5min")
    """
    keys = ["route", "model_version"]
    frame = predictions.assign(_route_rank=predictions["route"].map(
        {r: i for i, r in enumerate(ROUTE_ORDER)}).fillna(len(ROUTE_ORDER)))
    if freq is not None:
        frame = frame.assign(time=frame["scoring_time"].dt.floor(freq))
        keys = ["time", *keys]
    groups = keys[:-2]
    rows = frame.groupby([*keys, "_route_rank"], dropna=False).size().rename("events").reset_index()
    if groups:
        distinct = frame.groupby(groups)["event_id"].nunique().rename("_distinct").reset_index()
        rows = rows.merge(distinct, on=groups, how="left")
    else:
        rows["_distinct"] = frame["event_id"].nunique()
    rows["share"] = rows["events"] / rows["_distinct"]
    rows = rows.sort_values([*groups, "_route_rank", "model_version"]).reset_index(drop=True)
    return rows[[*keys, "events", "share"]]


def shadow_pairs(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per event scored by a shadow model: the served and the shadow model's
    version, score and prediction (empty when nothing ran in shadow).

    Example::

        pairs = shadow_pairs(preds)
        (pairs["served_prediction"] == pairs["shadow_prediction"]).mean()
    """
    cols = ["event_id", "model_version", "score", "prediction"]
    served = _served(predictions)[cols]
    shadow = predictions[predictions["route"] == "shadow"][cols]
    pairs = served.merge(shadow, on="event_id", how="inner", suffixes=("_served", "_shadow"))
    out = pairs.rename(columns={
        "model_version_served": "served_version", "score_served": "served_score",
        "prediction_served": "served_prediction", "model_version_shadow": "shadow_version",
        "score_shadow": "shadow_score", "prediction_shadow": "shadow_prediction",
    })
    return out[["event_id", "served_version", "served_score", "served_prediction", "shadow_version",
                "shadow_score", "shadow_prediction"]].sort_values("event_id").reset_index(drop=True)


def shadow_agreement(pairs: pd.DataFrame) -> pd.Series:
    """``n`` events, share with the same ``prediction``, mean absolute score difference
    and score correlation of :func:`shadow_pairs`.

    Example::

        shadow_agreement(shadow_pairs(preds))["prediction_agreement"]  # 0.97
    """
    n = len(pairs)
    if n == 0:
        return pd.Series({"n": 0, "prediction_agreement": math.nan, "mean_abs_score_diff": math.nan,
                          "score_correlation": math.nan})
    same = (pairs["served_prediction"] == pairs["shadow_prediction"]).mean()
    diff = (pairs["served_score"] - pairs["shadow_score"]).abs().mean()
    corr = pairs["served_score"].corr(pairs["shadow_score"]) if n > 1 else math.nan
    return pd.Series({"n": n, "prediction_agreement": float(same), "mean_abs_score_diff": float(diff),
                      "score_correlation": float(corr)})


# --------------------------------------------------------------------------- monitoring


def drift_matrix(drift: pd.DataFrame, statistic: str = "psi") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(values, drifted)``: the ``statistic``'s value per feature (rows, sorted) ×
    ``window_start`` (columns, in time order) from ``monitoring/<uc>_drift``, and a
    boolean frame of the same shape that is True where the feature drifted in that
    window by any of its statistics (the monitor's per-feature decision).

    Example::

        values, drifted = drift_matrix(drift, "psi")
        values.loc["amount"]
    """
    chosen = drift[drift["statistic"] == statistic]
    if chosen.empty:
        known = sorted(drift["statistic"].dropna().unique())
        raise UsageError(f"statistic: {statistic!r} is not in the drift table; expected one of {known}")
    values = chosen.pivot_table(index="feature", columns="window_start", values="value", aggfunc="max", dropna=False)
    values = values.sort_index().sort_index(axis=1)
    flags = drift.assign(drifted=drift["drifted"].fillna(False).astype(bool)).pivot_table(
        index="feature", columns="window_start", values="drifted", aggfunc="any")
    drifted = flags.reindex(index=values.index, columns=values.columns).eq(True)  # a window without a flag: False
    values.columns.name = drifted.columns.name = "window_start"
    return values, drifted


def drifted_windows(drift: pd.DataFrame) -> pd.DataFrame:
    """Per window (in time order): ``features`` monitored, ``drifted`` count and the
    drifted feature names (comma-separated, sorted).

    Example::

        drifted_windows(drift).query("drifted > 0")
    """
    flagged = drift.assign(_d=drift["drifted"].fillna(False).astype(bool))
    per_feature = flagged.groupby(["window_start", "window_end", "feature"])["_d"].any().reset_index()
    rows = []
    for (start, end), group in per_feature.groupby(["window_start", "window_end"]):
        names = sorted(group.loc[group["_d"], "feature"])
        rows.append({"window_start": start, "window_end": end, "features": len(group), "drifted": len(names),
                     "drifted_features": ", ".join(names)})
    return pd.DataFrame(rows, columns=["window_start", "window_end", "features", "drifted", "drifted_features"])


def metric_label(frame: pd.DataFrame) -> pd.Series:
    """``metric`` or ``metric[column]`` (quality rows carry the column they measure)."""
    if "column" not in frame.columns:
        return frame["metric"].astype(str)
    col = frame["column"]
    return frame["metric"].astype(str).where(col.isna(), frame["metric"].astype(str) + "[" + col.astype(str) + "]")


def breached_windows(frame: pd.DataFrame) -> pd.DataFrame:
    """The breached rows of ``monitoring/<uc>_quality`` or ``_performance``: window,
    ``metric`` label (see :func:`metric_label`), value and threshold, in time order."""
    hit = frame[frame["breached"].fillna(False).astype(bool)]
    out = hit.assign(metric=metric_label(hit))[["window_start", "window_end", "metric", "value", "threshold"]]
    return out.sort_values(["window_start", "metric"]).reset_index(drop=True)


def alert_table(alerts: pd.DataFrame) -> pd.DataFrame:
    """``monitoring/<uc>_alerts`` newest first, with its reasons as one line of text
    (``source:subject statistic=value``, distinct, sorted) and ``bad`` as ``n/windows``.

    Example::

        alert_table(load_table(platform, "monitoring", "fraud_alerts"))
    """
    def reasons(items: Any) -> str:
        if items is None or (isinstance(items, float) and math.isnan(items)):
            return ""
        texts = {f"{r['source']}:{r['subject']} {r['statistic']}={r['value']:.3g}" for r in items}
        return "; ".join(sorted(texts))

    out = alerts.assign(
        bad=alerts["bad_windows"].astype(str) + "/" + alerts["windows"].astype(str),
        reasons=alerts["reasons"].map(reasons),
    )
    cols = ["alert_id", "window_start", "window_end", "bad", "retrain", "created_at", "reasons"]
    return out.sort_values(["window_end", "alert_id"], ascending=False)[cols].reset_index(drop=True)


# --------------------------------------------------------------------------- figures


def _figure(nrows: int = 1, ncols: int = 1, width: float = 10.0, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _route_label(route: str, version: Any) -> str:
    return f"{route} v{version}" if pd.notna(version) else str(route)


def plot_score_histogram(predictions: pd.DataFrame, bins: int = 30) -> Figure:
    """Score distribution per route and model version (density, overlaid)."""
    fig, axes = _figure()
    ax = axes[0, 0]
    for (route, version), group in predictions.groupby(["route", "model_version"], dropna=False):
        ax.hist(group["score"].dropna(), bins=bins, range=_score_range(predictions), density=True, alpha=0.5,
                histtype="stepfilled", color=ROUTE_COLORS.get(str(route)), label=_route_label(str(route), version))
    ax.set(title="online scores by route", xlabel="score", ylabel="density")
    ax.legend()
    return fig


def _score_range(*frames: pd.DataFrame) -> tuple[float, float]:
    scores = pd.concat([f["score"] for f in frames]).dropna()
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def plot_route_shares(predictions: pd.DataFrame, freq: str = "1min") -> Figure:
    """Share of events per route and model version over ``scoring_time`` buckets."""
    shares = route_shares(predictions, freq=freq)
    fig, axes = _figure()
    ax = axes[0, 0]
    for (route, version), group in shares.groupby(["route", "model_version"], dropna=False, sort=False):
        ax.plot(group["time"], group["share"], marker="o", color=ROUTE_COLORS.get(str(route)),
                linestyle="--" if route == "shadow" else "-", label=_route_label(str(route), version))
    if shares["time"].nunique() == 1:  # one bucket: keep matplotlib from spreading the axis over years
        step = pd.tseries.frequencies.to_offset(freq)
        ax.set_xlim(shares["time"].iloc[0] - step, shares["time"].iloc[0] + step)
    ax.set(title=f"share of events per route and model version ({freq} buckets of scoring time)",
           ylabel="share of events", ylim=(0, 1.05))
    ax.legend()
    fig.autofmt_xdate()
    return fig


def plot_latency(predictions: pd.DataFrame, bins: int = 40) -> Figure:
    """Histogram of event-to-prediction latency with p50 / p95 / p99 marked."""
    values = latency_ms(predictions)
    fig, axes = _figure()
    ax = axes[0, 0]
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.7)
    for (name, value), style in zip(latency_percentiles(predictions).items(), (":", "--", "-"), strict=True):
        if not math.isnan(value):
            ax.axvline(value, color="black", linestyle=style, label=f"{name} {value:,.0f} ms")
    ax.set(title="event-to-prediction latency (scoring_time − kafka_timestamp), served rows",
           xlabel="ms", ylabel="predictions")
    ax.legend()
    return fig


def plot_shadow_agreement(pairs: pd.DataFrame) -> Figure:
    """Served score vs shadow score per event (:func:`shadow_pairs`), with the diagonal."""
    fig, axes = _figure(width=5.5, height=5.0)
    ax = axes[0, 0]
    agree = pairs["served_prediction"] == pairs["shadow_prediction"]
    ax.scatter(pairs.loc[agree, "served_score"], pairs.loc[agree, "shadow_score"], s=8, alpha=0.5,
               color="tab:blue", label="same prediction")
    ax.scatter(pairs.loc[~agree, "served_score"], pairs.loc[~agree, "shadow_score"], s=12, alpha=0.8,
               color="tab:red", label="different prediction")
    low, high = _score_range(pairs.rename(columns={"served_score": "score"}),
                             pairs.rename(columns={"shadow_score": "score"}))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    versions = f"v{pairs['served_version'].iloc[0]} vs v{pairs['shadow_version'].iloc[0]}" if len(pairs) else ""
    ax.set(title=f"served vs shadow score {versions}", xlabel="served score", ylabel="shadow score")
    ax.legend()
    return fig


def plot_batch_vs_online(batch: pd.DataFrame, online: pd.DataFrame, bins: int = 30) -> Figure:
    """Score distributions of batch predictions and served online predictions (density)."""
    served = _served(online)
    fig, axes = _figure()
    ax = axes[0, 0]
    rng = _score_range(batch, served)
    ax.hist(batch["score"].dropna(), bins=bins, range=rng, density=True, alpha=0.5, label=f"batch ({len(batch):,})")
    ax.hist(served["score"].dropna(), bins=bins, range=rng, density=True, alpha=0.5,
            label=f"online, served ({len(served):,})")
    ax.set(title="batch vs online scores", xlabel="score", ylabel="density")
    ax.legend()
    return fig


def plot_drift_heatmap(values: pd.DataFrame, drifted: pd.DataFrame, statistic: str = "psi") -> Figure:
    """Heatmap of :func:`drift_matrix`: one row per feature, one column per window;
    × marks a window where the feature drifted."""
    fig, axes = _figure(height=max(2.5, 0.35 * len(values) + 1.5))
    ax = axes[0, 0]
    data = np.ma.masked_invalid(values.to_numpy(dtype=np.float64))
    image = ax.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=statistic)
    for i, j in zip(*np.nonzero(drifted.to_numpy()), strict=True):
        ax.text(j, i, "×", ha="center", va="center", color="red", fontsize=12, fontweight="bold")
    ax.set_yticks(range(len(values.index)), [str(f) for f in values.index])
    step = max(1, len(values.columns) // 12)
    ticks = list(range(0, len(values.columns), step))
    ax.set_xticks(ticks, [pd.Timestamp(values.columns[t]).strftime("%m-%d %H:%M") for t in ticks],
                  rotation=45, ha="right")
    ax.set(title=f"drift: {statistic} per feature and window (× drifted)", xlabel="window start")
    return fig


def plot_window_metrics(frame: pd.DataFrame, title: str, flag: str = "breached", ncols: int = 3) -> Figure:
    """One panel per metric of ``monitoring/<uc>_quality`` or ``_performance`` over
    ``window_start`` (one line per column for quality), flagged windows as red ×,
    the threshold dashed when it is one value."""
    metrics = sorted(frame["metric"].dropna().unique())
    ncols = max(1, min(ncols, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = _figure(nrows, ncols, width=11.0, height=2.6)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = frame[frame["metric"] == metric].sort_values("window_start")
        series = rows.groupby(rows["column"].fillna("")) if "column" in rows.columns else [("", rows)]
        for column, group in series:
            ax.plot(group["window_start"], group["value"], marker=".", label=column or None)
            bad = group[group[flag].fillna(False).astype(bool)]
            ax.scatter(bad["window_start"], bad["value"], marker="x", color="red", s=50, zorder=3)
        thresholds = rows["threshold"].dropna().unique()
        if len(thresholds) == 1:
            ax.axhline(float(thresholds[0]), color="red", linestyle="--", linewidth=0.8)
        if "column" in rows.columns and rows["column"].nunique() > 1:
            ax.legend(fontsize="x-small")
        ax.set_title(metric, fontsize="medium")
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{title} (red × = {flag}, dashed = threshold)")
    return fig


def plot_query_metrics(queries: pd.DataFrame) -> Figure:
    """Processed rows/s and batch duration over time, one line per streaming query."""
    fig, axes = _figure(2, 1, width=11.0, height=3.0)
    name = queries["query_name"].fillna(queries["query_id"].str[:8])
    for query, group in queries.assign(_name=name).sort_values("timestamp").groupby("_name"):
        axes[0, 0].plot(group["timestamp"], group["processed_rows_per_second"].astype("float64"), marker=".",
                        label=query)
        axes[1, 0].plot(group["timestamp"], group["batch_duration_ms"].astype("float64"), marker=".", label=query)
    axes[0, 0].set(title="processed rows/s per micro-batch", ylabel="rows/s")
    axes[1, 0].set(title="batch duration", ylabel="ms")
    axes[0, 0].legend(fontsize="small")
    return fig


def plot_model_events(events: pd.DataFrame) -> Figure:
    """Timeline of ``audit/<uc>_model_events``: one row per action, labelled with the
    version it moved to."""
    fig, axes = _figure(height=max(2.0, 0.45 * events["action"].nunique() + 1.2))
    ax = axes[0, 0]
    actions = sorted(events["action"].unique())
    level = {a: i for i, a in enumerate(actions)}
    ax.scatter(events["event_time"], events["action"].map(level), s=40, color="tab:purple", zorder=3)
    for _, row in events.iterrows():
        if pd.notna(row.get("to_version")):
            ax.annotate(f"v{int(row['to_version'])}", (row["event_time"], level[row["action"]]),
                        textcoords="offset points", xytext=(4, 5), fontsize="small")
    ax.set_yticks(range(len(actions)), actions)
    ax.set(title="model registry events", ylim=(-0.7, len(actions) - 0.3))
    fig.autofmt_xdate()
    return fig
