"""The numpy/scipy reference statistics of driftline.drift against scipy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from driftline import drift

RNG = np.random.default_rng(20241)


def deciles(values: np.ndarray, bins: int = 10) -> list[float]:
    return [float(q) for q in np.unique(np.quantile(values, np.arange(1, bins) / bins))]


def test_numeric_counts_follow_the_profile_rule() -> None:
    # a value equal to an edge belongs to the bin above it; NaN is in no bin
    assert drift.numeric_counts([0.5, 1.0, 1.99, 2.0, 7.0, np.nan], [1.0, 2.0]).tolist() == [1, 2, 2]
    assert drift.numeric_counts([], [1.0]).tolist() == [0, 0]


def test_psi_by_hand_and_its_properties() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([20, 30, 50])
    r, c = ref / 100, cur / 100
    assert drift.psi(ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))), abs=1e-15)
    assert drift.psi(ref, ref * 7) == 0.0
    assert drift.psi(ref, cur) == pytest.approx(drift.psi(cur, ref), abs=1e-15)  # PSI is symmetric
    # an empty bin is floored at eps, not infinite
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert drift.psi([5, 5], [0, 10]) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(drift.psi([1, 1], [0, 0]))


def test_js_distance_equals_scipy_on_histograms() -> None:
    ref_values, cur_values = RNG.normal(0, 1, 5000), RNG.normal(0.3, 1.2, 3000)
    edges = deciles(ref_values)
    ref, cur = drift.numeric_counts(ref_values, edges), drift.numeric_counts(cur_values, edges)
    expected = distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2)
    assert drift.js_distance(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert drift.js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-7)
    assert drift.js_distance([1, 0], [0, 3]) == pytest.approx(1.0, abs=1e-12)


def test_binned_wasserstein_equals_scipy_on_bin_points_exactly() -> None:
    edges = [1.0, 2.5, 4.0, 7.0]
    ref, cur = RNG.integers(0, 100, 5), RNG.integers(0, 100, 5)
    pts = drift.bin_points(edges)
    assert pts.tolist() == [0.25, 1.75, 3.25, 5.5, 8.5]
    expected = stats.wasserstein_distance(pts, pts, ref, cur)
    assert drift.wasserstein_binned(edges, ref, cur, normalise=False) == pytest.approx(expected, abs=1e-12)
    assert drift.wasserstein_binned(edges, ref, cur) == pytest.approx(expected / 6.0, abs=1e-12)


@pytest.mark.parametrize(("make_ref", "make_cur", "rel_tol"), [
    (lambda n: RNG.normal(0, 1, n), lambda n: RNG.normal(0.5, 1, n), 0.20),
    (lambda n: RNG.uniform(0, 1, n), lambda n: RNG.uniform(0.1, 1.1, n), 0.15),
    (lambda n: RNG.lognormal(3.5, 0.6, n), lambda n: 1.2 * RNG.lognormal(3.5, 0.6, n), 0.30),
])
def test_binned_wasserstein_against_scipy_on_raw_values_within_the_stated_tolerance(make_ref, make_cur,  # type: ignore[no-untyped-def]
                                                                                     rel_tol) -> None:
    """On 10 decile bins, location shifts: the binned value is within 20% (normal), 15% (uniform),
    30% (log-normal scale 1.2) of scipy on the raw values and never above it by more than 2%:
    values beyond the outer edges count at half a bin width out (see driftline.drift)."""
    ref_values, cur_values = make_ref(50_000), make_cur(20_000)
    edges = deciles(ref_values)
    binned = drift.wasserstein_binned(edges, drift.numeric_counts(ref_values, edges),
                                      drift.numeric_counts(cur_values, edges), normalise=False)
    raw = stats.wasserstein_distance(ref_values, cur_values)
    assert abs(binned - raw) <= rel_tol * raw
    assert binned <= raw * 1.02


def test_binned_wasserstein_grows_with_the_shift() -> None:
    ref_values = RNG.normal(0, 1, 20_000)
    edges = deciles(ref_values)
    ref = drift.numeric_counts(ref_values, edges)
    values = [drift.wasserstein_binned(edges, ref, drift.numeric_counts(RNG.normal(s, 1, 5000), edges))
              for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    assert values[0] < 0.01 < values[1]


def test_chi2_equals_scipy_contingency_and_drops_empty_columns() -> None:
    ref, cur = np.array([120, 0, 80, 40]), np.array([50, 0, 60, 10])
    stat, p = drift.chi2_test(ref, cur)
    table = np.vstack([ref, cur])[:, [0, 2, 3]]
    expected = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    assert drift.chi2_test([10, 0], [5, 0]) == (0.0, 1.0)


def test_categorical_statistics_count_unseen_categories() -> None:
    ref = {"DE": 600, "FR": 300, "US": 100}
    cur = {"DE": 50, "FR": 30, "US": 10, "XX": 10}
    keys, r, c = drift.align_categories(ref, cur)
    assert keys == ["DE", "FR", "US", "XX"] and r.tolist() == [600, 300, 100, 0] and c.tolist() == [50, 30, 10, 10]
    got = drift.categorical_statistics(ref, cur)
    assert got["unseen_share"] == pytest.approx(0.1)
    assert got["js"] == pytest.approx(distance.jensenshannon(r / r.sum(), c / c.sum(), base=2), abs=1e-12)
    expected = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert got["chi2"] == pytest.approx(expected.statistic, rel=1e-12)
    assert got["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert got["psi"] == pytest.approx(drift.psi(r, c), abs=0)
    assert drift.categorical_statistics(ref, {"DE": 6, "FR": 3, "US": 1})["p_value"] == pytest.approx(1.0)


def test_benjamini_hochberg_equals_scipy() -> None:
    p = RNG.uniform(0, 0.2, 25)
    assert np.allclose(drift.benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), atol=1e-15)
    with_nan = drift.benjamini_hochberg([0.01, np.nan, 0.02])
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1]) and with_nan[2] == pytest.approx(0.02)
    assert np.isnan(drift.benjamini_hochberg([np.nan])).all()


def test_roc_auc_equals_mann_whitney_and_the_binned_version_equals_it_on_binned_scores() -> None:
    y = (RNG.random(4000) < 0.1).astype(float)
    s = np.clip(RNG.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert drift.roc_auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    bins = np.minimum(np.floor(s * 1000), 999).astype(int)
    pos = np.bincount(bins[y == 1], minlength=1000)
    neg = np.bincount(bins[y == 0], minlength=1000)
    assert drift.roc_auc_from_counts(pos, neg) == pytest.approx(drift.roc_auc(y, bins), abs=1e-12)
    assert drift.roc_auc_from_counts(pos, neg) == pytest.approx(drift.roc_auc(y, s), abs=2e-3)
    assert math.isnan(drift.roc_auc([1, 1], [0.2, 0.3]))


def test_confusion_and_regression_metrics() -> None:
    assert drift.confusion_metrics(3, 1, 3) == {"precision": 0.75, "recall": 0.5}
    assert all(math.isnan(v) for v in drift.confusion_metrics(0, 0, 0).values())
    y, yhat = RNG.normal(30, 8, 500), RNG.normal(30, 8, 500)
    got = drift.regression_metrics(y, yhat)
    assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean((yhat - y) ** 2))), rel=1e-12)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(yhat - y))), rel=1e-12)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        drift.js_distance([1, -1], [1, 1])
    with pytest.raises(ValueError, match="counts for 2 edges"):
        drift.wasserstein_binned([1.0, 2.0], [1, 1], [1, 1])
