"""Is the challenger not worse than the champion on the same events? Paired tests for
progressive delivery (:mod:`driftline.delivery`), in numpy/scipy only (no Spark).

Both models scored the same ``n`` labelled events, so their metrics are correlated and
the comparison is paired. Three tests, one question each time:

* :func:`delong_test` (binary): the difference of two correlated ROC AUCs with DeLong's
  variance (DeLong, DeLong & Clarke-Pearson 1988), computed with the fast midrank
  algorithm of Sun & Xu (2014), O(n log n).
* :func:`bootstrap_test` (any metric): a seeded paired bootstrap of the difference;
  ``samples`` resamples of the events, both models resampled together.
* :func:`paired_abs_error_test` (regression): a paired t-test on the per-event absolute
  errors, i.e. on the difference of the mean absolute errors.

The decision is one-sided **non-inferiority**. With ``gain`` = the challenger's advantage
(AUC_chall − AUC_champ; for errors, MAE_champ − MAE_chall), the null hypothesis is
``H0: gain ≤ −margin`` (the challenger is worse by at least ``margin``). H0 is rejected,
verdict ``not_worse``, when the lower ``1 − alpha`` confidence bound of ``gain`` is above
``−margin``, equivalently when the one-sided p-value is below ``alpha``. Verdict ``worse``
when the upper ``1 − alpha`` bound is below ``−margin`` (worse by more than the margin,
with the same confidence); otherwise ``inconclusive``.

Error rate. A challenger whose true gain is ``−margin`` or less is called ``not_worse``
with probability at most ``alpha`` (exactly ``alpha`` at ``gain = −margin``, for large
``n``: the tests are asymptotic; ``tests/unit/test_evidence.py`` measures it on
simulated equal models with ``margin = 0``). An equally good challenger is called
``worse`` with probability at most ``alpha`` too.

Minimum sample size. The normal approximation needs both classes represented: DeLong's
variance comes from the positives' and the negatives' structural components, each an
average over the other class, so fewer than about 20 positives (or negatives) make the
standard error unreliable (``delivery.min_positives``, default 20, with
``delivery.min_labels`` events, default 500). Beyond validity, :func:`labels_needed`
estimates how many labelled events the bound needs to clear ``−margin`` when the observed
gain holds: ``n · (z₁₋α · SE / (gain + margin))²``; a gain at or below ``−margin`` never
clears it.

Example::

    ev = delong_test(y, champion_scores, challenger_scores, margin=0.01, alpha=0.05)
    ev.verdict, ev.difference, ev.se, ev.bound, ev.p_value
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats

from driftline.errors import UsageError

Verdict = Literal["not_worse", "worse", "inconclusive"]
TESTS = ("delong", "bootstrap", "paired_abs_error")


@dataclass(frozen=True)
class Evidence:
    """The outcome of a paired non-inferiority test of the challenger against the champion.

    ``champion``/``challenger``: each model's metric on the same events; ``difference``:
    challenger − champion in the metric's own direction (an AUC, or an error); ``gain``:
    the challenger's advantage (``difference`` for a metric where higher is better, its
    negative for an error); ``se``: the standard error of ``gain``; ``bound``: its lower
    one-sided ``1 − alpha`` confidence bound (not worse when above ``−margin``); ``upper``:
    the upper bound (worse when below ``−margin``); ``p_value``: one-sided, of
    ``H0: gain ≤ −margin``; ``n`` events, ``positives`` among them (binary; None else)."""

    test: str
    metric: str
    champion: float
    challenger: float
    difference: float
    gain: float
    se: float
    bound: float
    upper: float
    p_value: float
    n: int
    positives: int | None
    margin: float
    alpha: float
    verdict: Verdict

    @property
    def not_worse(self) -> bool:
        return self.verdict == "not_worse"

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def _check(y: np.ndarray, a: np.ndarray, b: np.ndarray, margin: float, alpha: float) -> None:
    if not (len(y) == len(a) == len(b)):
        raise UsageError(f"labels and scores: expected equal lengths, got {len(y)}, {len(a)}, {len(b)}")
    if margin < 0 or not 0 < alpha < 0.5:
        raise UsageError(f"margin, alpha: expected margin >= 0 and 0 < alpha < 0.5, got {margin}, {alpha}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UsageError("scores: expected finite numbers; drop events a model did not score first")


def _decide(test: str, metric: str, champion: float, challenger: float, gain: float, se: float, n: int,
            positives: int | None, margin: float, alpha: float, *, higher_is_better: bool,
            p_value: float | None = None, quantiles: tuple[float, float] | None = None,
            dof: int | None = None) -> Evidence:
    """Bounds, p-value and verdict from the gain and its standard error (normal, or Student t
    with ``dof``), or from bootstrap ``quantiles`` of the gain (lower, upper)."""
    crit = float(stats.t.ppf(1 - alpha, dof) if dof else stats.norm.ppf(1 - alpha))
    if quantiles is not None:
        lower, upper = quantiles
    else:
        lower, upper = gain - crit * se, gain + crit * se
    if p_value is None:
        if se > 0:
            z = (gain + margin) / se
            p_value = float(stats.t.sf(z, dof) if dof else stats.norm.sf(z))
        else:
            p_value = 0.0 if gain > -margin else 1.0
    verdict: Verdict = "not_worse" if lower > -margin else "worse" if upper < -margin else "inconclusive"
    difference = gain if higher_is_better else -gain
    return Evidence(test, metric, float(champion), float(challenger), float(difference), float(gain), float(se),
                    float(lower), float(upper), float(p_value), int(n), positives, float(margin), float(alpha), verdict)


# --------------------------------------------------------------------------- ROC AUC


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with ties counted one half: the Mann-Whitney U of the positives' scores over
    the negatives', divided by ``n1 · n0`` (NaN when a class is missing)."""
    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = stats.rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(aucs, v10, v01)`` for ``k`` scorers (``scores`` of shape ``(k, n)``) by the fast
    midrank algorithm: ``v10[r, i]`` is scorer r's structural component of positive i (the
    share of negatives it outranks, ties one half), ``v01[r, j]`` that of negative j (the
    share of positives outranking it). O(k · n log n)."""
    y = np.asarray(y, dtype=bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise UsageError(f"labels: expected both classes, got {m} positives and {n} negatives")
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(aucs, covariance)`` of ``k`` scorers' AUCs on the same events (DeLong)."""
    aucs, v10, v01 = delong_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def delong_test(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, margin: float = 0.0,
                alpha: float = 0.05) -> Evidence:
    """Paired DeLong test of ``AUC_chall − AUC_champ`` on the same events, one-sided
    non-inferiority at ``margin`` (see the module docstring).

    Example::

        >>> y = np.array([0, 0, 1, 1, 0, 1]); a = np.array([.1, .4, .35, .8, .2, .7])
        >>> delong_test(y, a, a).difference
        0.0
    """
    y, a, b = np.asarray(y).astype(bool), np.asarray(champion, float), np.asarray(challenger, float)
    _check(y, a, b, margin, alpha)
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    return _decide("delong", "roc_auc", aucs[0], aucs[1], float(aucs[1] - aucs[0]), se, len(y), int(y.sum()),
                   margin, alpha, higher_is_better=True)


# --------------------------------------------------------------------------- regression


def paired_abs_error_test(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, margin: float = 0.0,
                          alpha: float = 0.05) -> Evidence:
    """Paired t-test on absolute errors: ``d_i = |y_i − champ_i| − |y_i − chall_i|`` (the
    challenger's gain per event), ``H0: mean(d) ≤ −margin``, Student t with ``n − 1``
    degrees of freedom; the metric is the MAE. Equal to
    ``scipy.stats.ttest_rel(|e_champ| + margin, |e_chall|, alternative="greater")``."""
    y, a, b = np.asarray(y, float), np.asarray(champion, float), np.asarray(challenger, float)
    _check(y, a, b, margin, alpha)
    if len(y) < 2:
        raise UsageError(f"labels: expected at least 2 events, got {len(y)}")
    ea, eb = np.abs(y - a), np.abs(y - b)
    d = ea - eb
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return _decide("paired_abs_error", "mae", ea.mean(), eb.mean(), float(d.mean()), se, len(y), None, margin, alpha,
                   higher_is_better=False, dof=len(d) - 1)


# --------------------------------------------------------------------------- bootstrap


def _rmse(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((y - s) ** 2, axis=-1))


def _mae(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(y - s), axis=-1)


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``s`` against the same row of ``y`` (NaN for a one-class row)."""
    y = y.astype(bool)
    ranks = stats.rankdata(s, axis=-1)
    n1 = y.sum(axis=-1)
    n0 = y.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((np.where(y, ranks, 0.0).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0))


METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = {
    "roc_auc": (_auc_rows, True), "rmse": (_rmse, False), "mae": (_mae, False),
}


def bootstrap_test(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, metric: str = "roc_auc",
                   margin: float = 0.0, alpha: float = 0.05, samples: int = 1000, seed: int = 0) -> Evidence:
    """Seeded paired bootstrap of the challenger's gain in ``metric`` (``roc_auc``, ``rmse``,
    ``mae``): ``samples`` resamples of the events with replacement, both models' scores
    resampled together. ``se``: the standard deviation of the resampled gains; bounds: their
    ``alpha`` and ``1 − alpha`` quantiles (percentile interval); p-value: the share of resampled
    gains at or below ``−margin`` (``(k + 1) / (samples + 1)``). A resample without both classes
    is dropped (AUC)."""
    if metric not in METRICS:
        raise UsageError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    fn, higher = METRICS[metric]
    y, a, b = np.asarray(y, float), np.asarray(champion, float), np.asarray(challenger, float)
    _check(y, a, b, margin, alpha)
    rng = np.random.default_rng(seed)
    sign = 1.0 if higher else -1.0
    gains = []
    for start in range(0, samples, 200):  # in chunks: memory stays at 200 x n
        idx = rng.integers(0, len(y), size=(min(200, samples - start), len(y)))
        yy = y[idx]
        gains.append(sign * (fn(yy, b[idx]) - fn(yy, a[idx])))
    g = np.concatenate(gains)
    g = g[np.isfinite(g)]
    if len(g) < 2:
        raise UsageError("bootstrap: fewer than 2 resamples had both classes; more labelled events are needed")
    ca, cb = float(fn(y, a)), float(fn(y, b))
    gain = sign * (cb - ca)
    p = float((np.sum(g <= -margin) + 1) / (len(g) + 1))
    lower, upper = (float(q) for q in np.quantile(g, [alpha, 1 - alpha]))
    positives = int(y.sum()) if metric == "roc_auc" else None
    return _decide("bootstrap", metric, ca, cb, gain, float(g.std(ddof=1)), len(y), positives, margin, alpha,
                   higher_is_better=higher, p_value=p, quantiles=(lower, upper))


# --------------------------------------------------------------------------- choosing and sizing


def compare(test: str, y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, metric: str,
            margin: float, alpha: float, samples: int = 1000, seed: int = 0) -> Evidence:
    """Run test ``test`` (``delong``, ``bootstrap`` or ``paired_abs_error``) on the same events."""
    if test == "delong":
        return delong_test(y, champion, challenger, margin=margin, alpha=alpha)
    if test == "paired_abs_error":
        return paired_abs_error_test(y, champion, challenger, margin=margin, alpha=alpha)
    if test == "bootstrap":
        return bootstrap_test(y, champion, challenger, metric=metric, margin=margin, alpha=alpha, samples=samples,
                              seed=seed)
    raise UsageError(f"test: expected one of {list(TESTS)}, got {test!r}")


def labels_needed(ev: Evidence) -> int | None:
    """Labelled events for the lower bound to clear ``−margin`` if the observed gain and its
    per-event spread held: ``n · (z · SE / (gain + margin))²``; None when the gain is at or
    below ``−margin`` (more events would only confirm it)."""
    room = ev.gain + ev.margin
    if room <= 0:
        return None
    if ev.se == 0:
        return ev.n
    z = float(stats.norm.ppf(1 - ev.alpha))
    return int(math.ceil(ev.n * (z * ev.se / room) ** 2))
