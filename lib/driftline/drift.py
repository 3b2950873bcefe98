"""Drift statistics in plain numpy/scipy: the reference implementation.

Every statistic the streaming monitor (:mod:`driftline.monitoring`) writes is
computed here, from counts. The monitor counts with Spark's built-in
aggregations and calls these functions on the small per-window count table;
tests and benchmarks call the same functions on counts made with numpy from
raw values (:func:`numeric_counts`, :func:`categorical_counts`), and compare
against scipy on the raw values where scipy has the statistic::

    ref = np.array(profile["numeric"]["amount"]["counts"])
    cur = numeric_counts(window_amounts, profile["numeric"]["amount"]["edges"])
    psi(ref, cur), js_distance(ref, cur), wasserstein_binned(edges, ref, cur)
    chi2_test(ref, cur)                 # (statistic, p-value) of the 2 x K contingency table
    benjamini_hochberg([0.01, 0.2, 0.03])

Conventions:

* Numeric bins follow :mod:`driftline.profile`: ``len(edges) + 1`` half-open bins,
  a value's bin is ``searchsorted(edges, x, side="right")``; null/NaN values are
  not in any bin (they are the missing rate, a quality metric).
* PSI uses proportions floored at ``eps`` (1e-4) so an empty bin is finite.
* Jensen–Shannon is the *distance* (square root of the divergence), base 2: in [0, 1].
* Wasserstein-1 is computed on the bins: each bin is represented by one point
  (interior bins by their midpoint, the two open outer bins by the outer edge
  moved out by half the adjacent bin's width) and weighted by its count; it is
  divided by the reference spread ``edges[-1] - edges[0]`` (the 10%–90%
  inter-decile range for 10 quantile bins). The binned value equals
  ``scipy.stats.wasserstein_distance`` on the bin points exactly; against scipy on
  the raw values it is an approximation whose error is bounded by the bin
  widths in the interior plus the tails' spread beyond the outer edges.
* Chi-square is the test of homogeneity of the 2 x K table (reference counts,
  current counts) without continuity correction; categories absent from both
  rows are dropped, an unseen category is a column with reference count 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

from driftline.errors import UsageError

PSI_EPS = 1e-4

ArrayLike = Sequence[float] | np.ndarray


def _counts(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise UsageError(f"{name}: expected a 1-d sequence of counts, got shape {arr.shape}")
    if (arr < 0).any() or not np.isfinite(arr).all():
        raise UsageError(f"{name}: expected finite non-negative counts")
    return arr


def _pair(reference: ArrayLike, current: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = _counts(reference, "reference"), _counts(current, "current")
    if ref.shape != cur.shape:
        raise UsageError(f"reference, current: expected counts of the same length, got {len(ref)} and {len(cur)}")
    return ref, cur


# --------------------------------------------------------------------------- counting


def numeric_counts(values: ArrayLike, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin (``len(edges) + 1``) of the non-null values, the profile's rule.

        >>> numeric_counts([0.0, 1.0, 1.5, 3.0, np.nan], [1.0, 2.0]).tolist()
        [1, 2, 1]
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), arr, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def categorical_counts(values: Sequence[Any]) -> dict[str, int]:
    """Counts per category of the non-null values (as strings).

        >>> categorical_counts(["a", "b", "a", None])
        {'a': 2, 'b': 1}
    """
    out: dict[str, int] = {}
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        key = str(v)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def align_categories(
    reference: Mapping[str, float], current: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The union of categories (reference order first, then unseen ones sorted) and both count vectors.

        >>> align_categories({"a": 3, "b": 1}, {"b": 2, "z": 1})
        (['a', 'b', 'z'], array([3., 1., 0.]), array([0., 2., 1.]))
    """
    unseen = sorted(k for k in current if k not in reference)
    keys = [*reference.keys(), *unseen]
    ref = np.array([float(reference.get(k, 0)) for k in keys])
    cur = np.array([float(current.get(k, 0)) for k in keys])
    return keys, ref, cur


def unseen_share(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Share of the current counts that fall in categories the reference never saw (0 when empty).

        >>> unseen_share({"a": 3}, {"a": 3, "new": 1})
        0.25
    """
    total = float(sum(current.values()))
    if total <= 0:
        return 0.0
    return float(sum(v for k, v in current.items() if k not in reference)) / total


# --------------------------------------------------------------------------- statistics


def proportions(counts: ArrayLike) -> np.ndarray:
    c = _counts(counts, "counts")
    total = c.sum()
    return c / total if total > 0 else np.zeros_like(c)


def psi(reference: ArrayLike, current: ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over bin proportions floored at ``eps``.

        >>> round(psi([50, 50], [80, 20]), 6)
        0.415888
    """
    ref, cur = _pair(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    r = np.maximum(ref / ref.sum(), eps)
    c = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: ArrayLike, current: ArrayLike) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the two count vectors' distributions.

        >>> js_distance([1, 0], [0, 1])
        1.0
    """
    ref, cur = _pair(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2.0))


def bin_points(edges: Sequence[float]) -> np.ndarray:
    """One representative point per bin: interior midpoints; the open outer bins sit half
    the adjacent bin's width beyond the outer edges (half of 1.0 when there is one edge).

        >>> bin_points([0.0, 1.0, 3.0]).tolist()
        [-0.5, 0.5, 2.0, 4.0]
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.size == 0:
        return np.zeros(1)
    if e.size == 1:
        return np.array([e[0] - 0.5, e[0] + 0.5])
    mids = (e[1:] + e[:-1]) / 2.0
    return np.concatenate([[e[0] - (e[1] - e[0]) / 2.0], mids, [e[-1] + (e[-1] - e[-2]) / 2.0]])


def spread(edges: Sequence[float]) -> float:
    """The reference spread Wasserstein is divided by: ``edges[-1] - edges[0]`` (1.0 if that is 0).

        >>> spread([2.0, 5.0, 10.0])
        8.0
    """
    if len(edges) < 2:
        return 1.0
    s = float(edges[-1]) - float(edges[0])
    return s if s > 0 else 1.0


def wasserstein_binned(
    edges: Sequence[float], reference: ArrayLike, current: ArrayLike, normalise: bool = True
) -> float:
    """Wasserstein-1 distance between the binned distributions (see the module docstring),
    divided by :func:`spread` unless ``normalise=False``.

        >>> wasserstein_binned([0.0, 1.0, 2.0], [0, 1, 0, 0], [0, 0, 1, 0], normalise=False)
        1.0
    """
    ref, cur = _pair(reference, current)
    if len(ref) != len(edges) + 1:
        raise UsageError(f"reference: expected {len(edges) + 1} counts for {len(edges)} edges, got {len(ref)}")
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    pts = bin_points(edges)
    # Both distributions live on the same ordered points: W1 = sum |CDF_r - CDF_c| * gap.
    cdf_gap = np.abs(np.cumsum(ref / ref.sum()) - np.cumsum(cur / cur.sum()))[:-1]
    w = float(np.sum(cdf_gap * np.diff(pts)))
    return w / spread(edges) if normalise else w


def chi2_test(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Chi-square test of homogeneity of the 2 x K table ``[reference; current]``: (statistic, p-value).

    Columns empty in both rows are dropped; with fewer than two columns left the
    distributions cannot differ: (0.0, 1.0). Example::

        >>> stat, p = chi2_test([500, 500], [400, 600]); round(stat, 3), p < 1e-4
        (20.202, True)
    """
    ref, cur = _pair(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan"), float("nan")
    keep = (ref + cur) > 0
    if keep.sum() < 2:
        return 0.0, 1.0
    r, c = ref[keep], cur[keep]
    n_r, n_c = r.sum(), c.sum()
    col = r + c
    n = n_r + n_c
    exp_r, exp_c = col * n_r / n, col * n_c / n
    stat = float(np.sum((r - exp_r) ** 2 / exp_r) + np.sum((c - exp_c) ** 2 / exp_c))
    dof = int(keep.sum()) - 1
    return stat, float(stats.chi2.sf(stat, dof))


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN stays NaN and is not counted in the family).

        >>> benjamini_hochberg([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
        [0.03, 0.04, 0.04, nan]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adjusted, 1.0)
    out[ok] = res
    return out


# --------------------------------------------------------------------------- performance


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC as the Mann–Whitney probability P(score+ > score-) + P(tie)/2 (NaN with one class).

        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_from_counts(positives: ArrayLike, negatives: ArrayLike) -> float:
    """ROC AUC from per-score-bin counts of positives and negatives (bins in increasing score order);
    scores in the same bin count as ties. Equals :func:`roc_auc` on the binned scores.

        >>> roc_auc_from_counts([0, 1, 1], [1, 1, 0])
        0.875
    """
    pos, neg = _pair(positives, negatives)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + neg / 2.0)) / (n_pos * n_neg))


def confusion_metrics(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Precision and recall from confusion counts (NaN when undefined).

        >>> confusion_metrics(8, 2, 8)
        {'precision': 0.8, 'recall': 0.5}
    """
    precision = tp / (tp + fp) if tp + fp > 0 else float("nan")
    recall = tp / (tp + fn) if tp + fn > 0 else float("nan")
    return {"precision": float(precision), "recall": float(recall)}


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """RMSE and MAE (NaN when empty).

        >>> regression_metrics([1.0, 2.0], [2.0, 4.0])
        {'rmse': 1.5811388300841898, 'mae': 1.5}
    """
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    if err.size == 0:
        return {"rmse": float("nan"), "mae": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


# --------------------------------------------------------------------------- one feature


def numeric_statistics(edges: Sequence[float], reference: ArrayLike, current: ArrayLike) -> dict[str, float]:
    """Every numeric statistic from bin counts: psi, js, wasserstein (normalised), chi2 and its p-value."""
    chi, p = chi2_test(reference, current)
    return {
        "psi": psi(reference, current),
        "js": js_distance(reference, current),
        "wasserstein": wasserstein_binned(edges, reference, current),
        "chi2": chi,
        "p_value": p,
    }


def categorical_statistics(reference: Mapping[str, float], current: Mapping[str, float]) -> dict[str, float]:
    """Every categorical statistic from category counts: psi, js, chi2, its p-value and the unseen share."""
    _, ref, cur = align_categories(reference, current)
    chi, p = chi2_test(ref, cur)
    return {
        "psi": psi(ref, cur),
        "js": js_distance(ref, cur),
        "chi2": chi,
        "p_value": p,
        "unseen_share": unseen_share(reference, current),
    }


def profile_statistics(
    profile: Mapping[str, Any], kind: str, feature: str, buckets: Sequence[Any], counts: Sequence[float]
) -> tuple[dict[str, float], int]:
    """The statistics of one feature's current counts (``buckets``: bin indices, or category
    values for ``kind == "categorical"``) against its entry in a reference profile, and the
    reference's row count. ``kind`` is ``numeric``, ``categorical`` or ``prediction`` (the score).

    Example::

        values, n_ref = profile_statistics(profile, "numeric", "amount", [0, 3], [120, 80])
    """
    if kind == "categorical":
        reference = {str(k): float(v) for k, v in profile["categorical"][feature]["counts"].items()}
        current = {str(b): float(n) for b, n in zip(buckets, counts, strict=True)}
        return categorical_statistics(reference, current), int(sum(reference.values()))
    entry = profile["numeric"][feature] if kind == "numeric" else profile["prediction"]
    ref = np.asarray(entry["counts"], dtype=np.float64)
    cur = np.zeros(len(ref))
    for b, n in zip(buckets, counts, strict=True):
        cur[int(b)] += float(n)
    return numeric_statistics(entry["edges"], ref, cur), int(ref.sum())
