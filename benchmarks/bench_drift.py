"""Drift computation (issue 7): 1M reference vs 1M current rows x 20 features, the
streaming monitor's Spark path against numpy/scipy on pandas and against Evidently,
with the values compared.

    .venv/bin/python -m benchmarks.bench_drift                       # 1M x 1M x 20
    .venv/bin/python -m benchmarks.bench_drift --rows 200000 --skip-evidently

Needs the ``bench`` extra for Evidently (``pip install -e '.[bench]'``, done by ``make bench``).
Data: 14 numeric features (normal, log-normal, uniform; 3 of them drifted: a 0.25 sd
shift, a 1.5x scale, a 1.2x log-normal factor) and 6 categorical ones (one gets an
unseen category on 2% of rows, one has its proportions changed), all held in memory
(pandas; Spark caches its copy before timing). Measurements:

* ``driftline reference profile (Spark)``: :func:`driftline.profile.build_reference_profile`
  on the reference rows, 10 quantile bins (done once, at training time);
* ``driftline window statistics (Spark)``: the monitor's path for one window of the
  current rows: :func:`driftline.monitoring.event_counts` (one aggregation), collect the
  count table, :func:`driftline.monitoring.window_tables` (PSI, JS, Wasserstein, chi-square,
  Benjamini-Hochberg);
* ``numpy/scipy on pandas``: the same statistics with :mod:`driftline.drift` on counts made
  with numpy (quantile edges, ``searchsorted``/``bincount``, ``value_counts``) from both frames;
* ``scipy wasserstein_distance on raw values``: the exact Wasserstein-1 for each numeric feature;
* ``Evidently Report``: ``ValueDrift`` per feature, methods psi, jensenshannon and wasserstein
  (numeric) and chisquare and jensenshannon (categorical).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform as py_platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from driftline import drift
from driftline.config import UseCaseConfig, load_platform

log = logging.getLogger("benchmarks.bench_drift")

NUMERIC = [f"n{i:02d}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
LEVELS = [f"v{k}" for k in range(8)]


def make_data(rows: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames: 14 numeric, 6 categorical columns, some drifted in ``current``."""
    rng = np.random.default_rng(seed)

    def frame(current: bool) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for i, name in enumerate(NUMERIC):
            kind = i % 3
            if kind == 0:
                x = rng.normal(10.0 * i, 1.0 + i, rows)
            elif kind == 1:
                x = rng.lognormal(2.0 + 0.1 * i, 0.6, rows)
            else:
                x = rng.uniform(-i, i + 1.0, rows)
            if current and name == "n00":
                x = x + 0.25 * 1.0
            if current and name == "n01":
                x = x * 1.2
            if current and name == "n03":
                x = 10.0 * 3 + (x - 10.0 * 3) * 1.5
            cols[name] = x
        base = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
        for j, name in enumerate(CATEGORICAL):
            p = base.copy()
            if current and name == "c1":
                p = p[::-1].copy()
            values = np.array(LEVELS, dtype=object)[rng.choice(len(LEVELS), rows, p=p / p.sum())]
            if current and name == "c0":
                values[rng.random(rows) < 0.02] = "unseen"
            cols[name] = values
            del j
        cols["event_time"] = pd.Timestamp("2024-01-01 00:00:30")
        cols["event_id"] = "e"
        return pd.DataFrame(cols)

    return frame(False), frame(True)


def usecase() -> UseCaseConfig:
    schema = ([{"name": "event_id", "type": "string", "required": True},
               {"name": "event_time", "type": "timestamp", "required": True}]
              + [{"name": c, "type": "double"} for c in NUMERIC] + [{"name": c, "type": "string"} for c in CATEGORICAL])
    return UseCaseConfig.parse({
        "name": "bench", "entity_key": "event_id", "event_id": "event_id", "event_time": "event_time",
        "schema": schema, "label": {"field": "y", "kind": "binary"},
        "drift": {"window": "1h", "lateness": "0s", "min_samples": 100},
    })


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def numpy_statistics(ref: pd.DataFrame, cur: pd.DataFrame, bins: int = 10,
                     edges: dict[str, list[float]] | None = None) -> dict[str, dict[str, float]]:
    """Every statistic with numpy/scipy from the two frames (edges from reference quantiles unless given)."""
    out: dict[str, dict[str, float]] = {}
    probs = np.arange(1, bins) / bins
    for c in NUMERIC:
        e = edges[c] if edges else sorted(set(np.quantile(ref[c].to_numpy(), probs, method="inverted_cdf").tolist()))
        r = drift.numeric_counts(ref[c].to_numpy(), e)
        k = drift.numeric_counts(cur[c].to_numpy(), e)
        out[c] = drift.numeric_statistics(e, r, k)
    for c in CATEGORICAL:
        out[c] = drift.categorical_statistics(ref[c].value_counts().to_dict(), cur[c].value_counts().to_dict())
    adjusted = drift.benjamini_hochberg([out[c]["p_value"] for c in [*NUMERIC, *CATEGORICAL]])
    for c, p in zip([*NUMERIC, *CATEGORICAL], adjusted, strict=True):
        out[c]["p_adjusted"] = float(p)
    return out


def evidently_values(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[tuple[str, str], float]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    metrics = ([ValueDrift(column=c, method=m) for c in NUMERIC for m in ("psi", "jensenshannon", "wasserstein")]
               + [ValueDrift(column=c, method=m) for c in CATEGORICAL for m in ("chisquare", "jensenshannon")])
    cols = [*NUMERIC, *CATEGORICAL]
    snapshot = Report(metrics).run(current_data=Dataset.from_pandas(cur[cols], data_definition=definition),
                                   reference_data=Dataset.from_pandas(ref[cols], data_definition=definition))
    out: dict[tuple[str, str], float] = {}
    for m in snapshot.dict()["metrics"]:
        name = str(m.get("metric_name") or m.get("metric_id"))
        column = name.split("column=")[1].split(",")[0]
        method = name.split("method=")[1].split(",")[0]
        out[(column, method)] = float(m["value"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each of reference and current")
    parser.add_argument("--skip-evidently", action="store_true", help="do not run the Evidently report")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from driftline.monitoring import drift_spec, event_counts, window_tables
    from driftline.profile import build_reference_profile
    from driftline.session import build_session

    results: dict[str, Any] = {"rows": args.rows, "features": len(NUMERIC) + len(CATEGORICAL),
                               "machine": {"python": py_platform.python_version(), "cpus": __import__("os").cpu_count()},
                               "timings_s": {}}
    t_gen, (ref, cur) = timed(lambda: make_data(args.rows))
    print(f"data: {args.rows:,} reference + {args.rows:,} current rows x {len(NUMERIC) + len(CATEGORICAL)} features "
          f"(generated in {t_gen:.1f}s)", flush=True)

    platform = load_platform(overrides=["spark.ui_enabled=false", "spark.log_level=ERROR", "spark.driver_memory=4g"])
    spark = build_session(platform, "driftline-bench-drift")
    uc = usecase()
    spec = drift_spec(uc)
    ref_df = spark.createDataFrame(ref).cache()
    cur_df = spark.createDataFrame(cur).cache()
    ref_df.count()
    cur_df.count()

    t_prof, profile = timed(lambda: build_reference_profile(ref_df, NUMERIC, CATEGORICAL, bins=10))
    results["timings_s"]["driftline reference profile (Spark)"] = t_prof
    print(f"driftline reference profile (Spark, 10 quantile bins): {t_prof:.1f}s", flush=True)

    def spark_window() -> dict[str, list[dict[str, Any]]]:
        counts = event_counts(cur_df, profile, spec, uc, quarantined_col=None).toPandas()
        return window_tables(counts, profile, spec, uc, dt.datetime.now())

    spark_window()  # warm-up: first-run code generation
    t_win, tables = timed(spark_window)
    results["timings_s"]["driftline window statistics (Spark)"] = t_win
    print(f"driftline window statistics (Spark counts + statistics): {t_win:.1f}s", flush=True)
    spark_values = {(r["feature"], r["statistic"]): r for r in tables["drift"]}

    t_np, np_values = timed(lambda: numpy_statistics(ref, cur))
    results["timings_s"]["numpy/scipy on pandas (reference and current)"] = t_np
    print(f"numpy/scipy on pandas (edges, counts, statistics for both frames): {t_np:.1f}s", flush=True)
    same_bins = numpy_statistics(ref, cur, edges={c: profile["numeric"][c]["edges"] for c in NUMERIC})

    t_raw, raw_w = timed(lambda: {c: stats.wasserstein_distance(ref[c], cur[c]) for c in NUMERIC})
    results["timings_s"]["scipy wasserstein_distance on raw values (14 features)"] = t_raw
    print(f"scipy wasserstein_distance on raw values (14 numeric features): {t_raw:.1f}s", flush=True)

    ev: dict[tuple[str, str], float] = {}
    if not args.skip_evidently:
        t_imp, _ = timed(lambda: __import__("evidently.metrics"))
        t_ev, ev = timed(lambda: evidently_values(ref, cur))
        results["timings_s"]["Evidently Report (54 ValueDrift metrics)"] = t_ev
        print(f"Evidently Report, 54 ValueDrift metrics: {t_ev:.1f}s (import {t_imp:.1f}s not included)", flush=True)

    # ---- values
    diffs = {stat: max(abs(spark_values[(c, stat)]["value"] - same_bins[c][stat])
                       for c in (NUMERIC if stat == "wasserstein" else [*NUMERIC, *CATEGORICAL]))
             for stat in ("psi", "js", "wasserstein", "chi2")}
    diffs["p_adjusted"] = max(abs((spark_values[(c, "psi")]["p_adjusted"] or 0.0) - same_bins[c]["p_adjusted"])
                              for c in [*NUMERIC, *CATEGORICAL])
    results["spark_vs_numpy_same_bins_max_abs_diff"] = diffs
    print("\nSpark vs numpy/scipy on the same bins, max |difference| over features:",
          ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    rows = []
    for c in [*NUMERIC, *CATEGORICAL]:
        numeric = c in NUMERIC
        row: dict[str, Any] = {
            "feature": c, "psi": spark_values[(c, "psi")]["value"], "js": spark_values[(c, "js")]["value"],
            "drifted": any(spark_values[(c, s)]["drifted"]
                           for s in ("psi", "js", "wasserstein", "chi2", "unseen_share") if (c, s) in spark_values),
            "js_numpy_own_edges": np_values[c]["js"],
        }
        if numeric:
            spread = drift.spread(profile["numeric"][c]["edges"])
            row["w_binned"] = spark_values[(c, "wasserstein")]["value"] * spread
            row["w_raw_scipy"] = raw_w[c]
        if ev:
            if numeric:
                row["ev_psi"] = ev[(c, "psi")]
                row["ev_js"] = ev[(c, "jensenshannon")]
                row["ev_w_raw"] = ev[(c, "wasserstein")] * max(float(np.std(ref[c])), 0.001)
            else:
                row["ev_js"] = ev[(c, "jensenshannon")]
                row["ev_chi2_p"] = ev[(c, "chisquare")]
                row["p_value"] = spark_values[(c, "chi2")]["p_value"]
        rows.append(row)
    results["values"] = rows
    table = pd.DataFrame(rows).set_index("feature")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table)
    for k, v in results["timings_s"].items():
        print(f"  {k}: {v:.2f}s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
