"""The paired tests of driftline.evidence against references: scipy's Mann-Whitney U, a
brute-force structural-components DeLong variance, scipy's bootstrap, scipy's paired t-test,
and the false-positive rate on equal models over many seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from driftline import evidence as ev
from driftline.errors import UsageError


def binary_data(n: int, seed: int, *, rate: float = 0.3, signal: tuple[float, float] = (1.0, 1.0),
                ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated scorers: a shared latent signal plus each scorer's own noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(float)
    latent = y + rng.normal(0, 1.0, n)
    a = signal[0] * latent + rng.normal(0, 0.8, n)
    b = signal[1] * latent + rng.normal(0, 0.8, n)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


def brute_force_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's AUCs and covariance from the definition: psi over every (positive, negative) pair."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # per positive, per negative
    aucs = psi.mean(axis=(1, 2))
    m, n = pos.shape[1], neg.shape[1]
    s10 = np.array([[np.sum((v10[r] - aucs[r]) * (v10[s] - aucs[s])) / (m - 1) for s in range(2)] for r in range(2)])
    s01 = np.array([[np.sum((v01[r] - aucs[r]) * (v01[s] - aucs[s])) / (n - 1) for s in range(2)] for r in range(2)])
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("ties", [False, True])
def test_auc_is_the_mann_whitney_u_over_the_pairs(ties: bool) -> None:
    y, a, _ = binary_data(300, 1, ties=ties)
    u = stats.mannwhitneyu(a[y == 1], a[y == 0]).statistic
    assert ev.roc_auc(y, a) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    aucs, _, _ = ev.delong_components(y, np.vstack([a, a]))
    assert aucs[0] == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_fast_delong_covariance_equals_the_structural_components_by_brute_force(ties: bool) -> None:
    y, a, b = binary_data(120, 2, ties=ties)
    aucs, cov = ev.delong_covariance(y, np.vstack([a, b]))
    ref_aucs, ref_cov = brute_force_delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    result = ev.delong_test(y, a, b)
    assert result.se == pytest.approx(math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]), abs=1e-12)
    assert result.difference == pytest.approx(ref_aucs[1] - ref_aucs[0], abs=1e-12)
    assert result.positives == int(y.sum()) and result.n == 120


def test_delong_standard_error_is_close_to_a_paired_bootstrap() -> None:
    y, a, b = binary_data(400, 3, signal=(1.0, 0.8))

    def diff(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> float:
        return ev.roc_auc(yy, bb) - ev.roc_auc(yy, aa)

    boot = stats.bootstrap((y, a, b), diff, paired=True, vectorized=False, n_resamples=1500,
                           random_state=np.random.default_rng(0), method="percentile")
    result = ev.delong_test(y, a, b)
    assert result.se == pytest.approx(boot.standard_error, rel=0.12)
    # and the library's own paired bootstrap agrees with both
    mine = ev.bootstrap_test(y, a, b, samples=1500, seed=1)
    assert mine.se == pytest.approx(boot.standard_error, rel=0.12)
    assert mine.gain == pytest.approx(result.gain, abs=1e-12)


def test_non_inferiority_decision_bound_and_p_value() -> None:
    y, a, b = binary_data(2000, 4, signal=(1.0, 1.0))
    res = ev.delong_test(y, a, b, margin=0.05, alpha=0.05)
    z = stats.norm.ppf(0.95)
    assert res.bound == pytest.approx(res.gain - z * res.se) and res.upper == pytest.approx(res.gain + z * res.se)
    assert res.p_value == pytest.approx(stats.norm.sf((res.gain + 0.05) / res.se))
    assert res.verdict == "not_worse" and res.p_value < 0.05 and res.bound > -0.05
    # the same scorer against itself: difference 0, not worse whatever the margin (> 0)
    same = ev.delong_test(y, a, a, margin=0.01)
    assert same.difference == 0 and same.se == 0 and same.verdict == "not_worse"
    # a useless challenger is worse beyond the margin
    noise = np.random.default_rng(5).normal(size=len(y))
    bad = ev.delong_test(y, a, noise, margin=0.01)
    assert bad.verdict == "worse" and bad.upper < -0.01 and bad.p_value > 0.99
    assert ev.labels_needed(bad) is None
    # few events: inconclusive, and an estimate of how many the bound needs
    small = ev.delong_test(y[:80], a[:80], b[:80], margin=0.01)
    assert small.verdict == "inconclusive"
    needed = ev.labels_needed(small)
    assert needed is None or needed > 80


def test_paired_abs_error_test_equals_scipy_ttest_rel_shifted_by_the_margin() -> None:
    rng = np.random.default_rng(6)
    y = rng.gamma(3.0, 10.0, 500)
    a = y + rng.normal(0, 5.0, 500)
    b = y + rng.normal(0.5, 5.2, 500)
    for margin in (0.0, 0.3, 1.0):
        res = ev.paired_abs_error_test(y, a, b, margin=margin, alpha=0.05)
        ref = stats.ttest_rel(np.abs(y - a) + margin, np.abs(y - b), alternative="greater")
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert res.metric == "mae" and res.champion == pytest.approx(np.abs(y - a).mean())
        assert res.difference == pytest.approx(np.abs(y - b).mean() - np.abs(y - a).mean())
        crit = stats.t.ppf(0.95, 499)
        assert res.bound == pytest.approx(res.gain - crit * res.se)
        assert (res.verdict == "not_worse") == (ref.pvalue < 0.05)


def test_bootstrap_is_seeded_and_works_for_errors() -> None:
    y, a, b = binary_data(300, 7)
    first = ev.bootstrap_test(y, a, b, samples=400, seed=3)
    assert first == ev.bootstrap_test(y, a, b, samples=400, seed=3)
    assert first != ev.bootstrap_test(y, a, b, samples=400, seed=4)
    rng = np.random.default_rng(8)
    target = rng.normal(size=300)
    rm = ev.bootstrap_test(target, target + rng.normal(0, 1, 300), target + rng.normal(0, 3, 300), metric="rmse",
                           margin=0.1, samples=400)
    assert rm.verdict == "worse" and rm.difference > 0 and rm.gain < 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(UsageError, match="equal lengths"):
        ev.delong_test(np.array([0, 1]), np.array([0.1, 0.2]), np.array([0.3]))
    with pytest.raises(UsageError, match="both classes"):
        ev.delong_test(np.zeros(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(UsageError, match="finite"):
        ev.delong_test(np.array([0, 1]), np.array([0.1, np.nan]), np.array([0.3, 0.4]))
    with pytest.raises(UsageError, match="test"):
        ev.compare("t", np.array([0, 1]), np.array([0.1, 0.2]), np.array([0.3, 0.4]), metric="roc_auc",
                   margin=0, alpha=0.05)


def _binomial_interval(k: int, n: int, confidence: float = 0.999) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return ci.low, ci.high


@pytest.mark.parametrize("test", ["delong", "paired_abs_error"])
def test_false_positive_rate_on_equal_models_is_alpha(test: str) -> None:
    """Exchangeable scorers of equal quality, margin 0: H0 (the challenger is no better) holds
    at its boundary, so 'not worse' must come out in about alpha of the simulations."""
    alpha, sims, n = 0.05, 2000, 300
    rng = np.random.default_rng(20240201)
    rejections = 0
    for _ in range(sims):
        if test == "delong":
            y = (rng.random(n) < 0.3).astype(float)
            latent = y + rng.normal(0, 1.0, n)
            a, b = latent + rng.normal(0, 0.8, n), latent + rng.normal(0, 0.8, n)
            res = ev.delong_test(y, a, b, margin=0.0, alpha=alpha)
        else:
            y = rng.normal(0, 1, n)
            a, b = y + rng.normal(0, 1, n), y + rng.normal(0, 1, n)
            res = ev.paired_abs_error_test(y, a, b, margin=0.0, alpha=alpha)
        rejections += res.verdict == "not_worse"
    low, high = _binomial_interval(rejections, sims)
    assert low <= alpha <= high, (rejections / sims, low, high)


def test_false_positive_rate_of_the_bootstrap_on_equal_models() -> None:
    alpha, sims, n = 0.1, 300, 200
    rng = np.random.default_rng(11)
    rejections = 0
    for i in range(sims):
        y = (rng.random(n) < 0.3).astype(float)
        latent = y + rng.normal(0, 1.0, n)
        a, b = latent + rng.normal(0, 0.8, n), latent + rng.normal(0, 0.8, n)
        rejections += ev.bootstrap_test(y, a, b, margin=0.0, alpha=alpha, samples=200, seed=i).not_worse
    low, high = _binomial_interval(rejections, sims)
    assert low <= alpha <= high, (rejections / sims, low, high)
