"""Class weights and decision-threshold rules (issue 17): the rules against an exact brute
force over every way ``score >= t`` can split the pairs (fractions, no floating point), with
ties, unreachable floors and degenerate inputs; the ``model:`` keys checked at load."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from driftline.config import load_usecase
from driftline.config.sections import ModelSpec, ThresholdRule
from driftline.errors import ModelSpecError, TrainingDataError, UsageError
from driftline.training import choose_threshold, class_weights

RULES = [
    ThresholdRule(rule="max_f1"),
    ThresholdRule(rule="recall_at_precision", precision=0.5),
    ThresholdRule(rule="recall_at_precision", precision=0.8),
    ThresholdRule(rule="precision_at_recall", recall=0.5),
    ThresholdRule(rule="precision_at_recall", recall=0.9),
]


def confusion(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[Fraction, Fraction, Fraction]:
    """Exact precision, recall and F1 of ``score >= t``."""
    pred = scores >= t
    tp, fp = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    precision = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
    recall = Fraction(tp, tp + fn)
    f1 = Fraction(2 * tp, 2 * tp + fp + fn)
    return precision, recall, f1


def brute_force(scores: np.ndarray, labels: np.ndarray, rule: ThresholdRule) -> tuple[float, bool]:
    """The rule's pick among the thresholds t = each distinct score (every split ``score >= t``
    can make that flags something), as documented: best goal among the cuts meeting the floor,
    then the other metric, then the highest t; an unreachable floor: the cut closest to it.
    Returns that distinct score and whether the floor was met."""
    rows = []
    for t in sorted(set(scores.tolist()), reverse=True):
        if t <= 0.0:
            continue  # score >= t for t <= 0 is no threshold in (0, 1)
        p, r, f1 = confusion(scores, labels, t)
        rows.append((t, p, r, f1))
    floor = Fraction(str(rule.floor or 0))  # the decimal the YAML says, exactly
    if rule.rule == "max_f1":
        ok, goal, tie, fb = rows, (lambda x: x[3]), (lambda x: x[1]), None
    elif rule.rule == "recall_at_precision":
        ok, goal, tie = [x for x in rows if x[1] >= floor], (lambda x: x[2]), (lambda x: x[1])
        fb = ((lambda x: x[1]), (lambda x: x[2]))
    else:
        ok, goal, tie = [x for x in rows if x[2] >= floor], (lambda x: x[1]), (lambda x: x[2])
        fb = ((lambda x: x[2]), (lambda x: x[1]))
    met = bool(ok)
    if not met:
        assert fb is not None
        ok, (goal, tie) = rows, fb
    best = max(ok, key=lambda x: (goal(x), tie(x), x[0]))
    return best[0], met


def assert_matches(scores: Any, labels: Any, rule: ThresholdRule) -> None:
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    got = choose_threshold(s, y, rule)
    want_t, want_met = brute_force(s, y, rule)
    # the same split of the pairs: the chosen cut lies between want_t and the next lower score
    assert ((s >= got.threshold) == (s >= want_t)).all(), (rule, got, want_t)
    assert 0 < got.threshold <= want_t
    assert got.met == want_met
    p, r, f1 = confusion(s, y, got.threshold)
    assert (got.precision, got.recall, got.f1) == pytest.approx((float(p), float(r), float(f1)), abs=1e-15)
    assert (got.rows, got.positives) == (len(s), int(y.sum()))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.rule}-{r.floor}")
def test_rules_match_an_exact_brute_force_on_random_pairs_with_ties(seed: int, rule: ThresholdRule) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = (rng.uniform(size=n) < rng.uniform(0.02, 0.5)).astype(int)
    labels[int(rng.integers(0, n))] = 1  # at least one positive
    # informative scores rounded to two decimals: many ties, some across classes
    scores = np.clip(np.round(rng.beta(2, 5, n) + 0.3 * labels * rng.uniform(size=n), 2), 0.0, 1.0)
    assert_matches(scores, labels, rule)


def test_tied_scores_fall_on_one_side_of_the_threshold() -> None:
    scores = [0.8, 0.8, 0.8, 0.3, 0.3, 0.1]
    labels = [1, 0, 1, 0, 1, 0]
    got = choose_threshold(scores, labels, ThresholdRule(rule="max_f1"))
    # cuts: 0.55 (P 2/3, R 2/3, F1 2/3), 0.2 (P 3/5, R 1, F1 3/4), 0.05 (P 1/2, R 1, F1 2/3)
    assert got.threshold == pytest.approx(0.2) and got.f1 == pytest.approx(0.75)
    assert (got.precision, got.recall) == pytest.approx((0.6, 1.0))
    for rule in RULES:
        assert_matches(scores, labels, rule)


def test_ties_in_the_goal_go_to_the_other_metric_then_to_the_higher_threshold() -> None:
    # cuts 0.85 (P 1, R 1/2), 0.75 (P 1/2, R 1/2), 0.65 (P 1/3, R 1/2), 0.3 (P 1/2, R 1)
    scores, labels = [0.9, 0.8, 0.7, 0.6], [1, 0, 0, 1]
    got = choose_threshold(scores, labels, ThresholdRule(rule="recall_at_precision", precision=0.5))
    assert got.recall == 1.0 and got.precision == 0.5 and got.threshold == pytest.approx(0.3)
    got = choose_threshold(scores, labels, ThresholdRule(rule="recall_at_precision", precision=0.6))
    assert (got.threshold, got.precision, got.recall) == pytest.approx((0.85, 1.0, 0.5))
    # F1 2/3 at both 0.85 (tp 1, fp 0) and 0.3 (tp 2, fp 2): the higher precision wins
    got = choose_threshold(scores, labels, ThresholdRule(rule="max_f1"))
    assert got.f1 == pytest.approx(2 / 3) and got.threshold == pytest.approx(0.85)


def test_an_unreachable_precision_floor_falls_back_to_the_most_precise_cut() -> None:
    scores, labels = [0.9, 0.8, 0.7], [0, 1, 0]  # the top score is a negative: precision <= 1/2
    got = choose_threshold(scores, labels, ThresholdRule(rule="recall_at_precision", precision=0.6))
    assert not got.met
    assert (got.threshold, got.precision, got.recall) == pytest.approx((0.75, 0.5, 1.0))
    assert choose_threshold(scores, labels, ThresholdRule(rule="recall_at_precision", precision=0.5)).met


def test_an_unreachable_recall_floor_falls_back_to_the_highest_recall() -> None:
    # the second positive scores 0: flagging it would need threshold 0, outside (0, 1)
    scores, labels = [0.0, 0.0, 0.5, 0.4], [1, 0, 1, 0]
    got = choose_threshold(scores, labels, ThresholdRule(rule="precision_at_recall", recall=1.0))
    assert not got.met and got.recall == 0.5 and got.precision == 1.0 and got.threshold == pytest.approx(0.45)
    assert_matches(scores, labels, ThresholdRule(rule="precision_at_recall", recall=1.0))


def test_degenerate_inputs() -> None:
    rule = ThresholdRule(rule="max_f1")
    with pytest.raises(TrainingDataError, match="no positive labels|has none"):
        choose_threshold([0.2, 0.7], [0, 0], rule)
    with pytest.raises(TrainingDataError, match="every validation score is 0.0"):
        choose_threshold([0.0, 0.0], [0, 1], rule)
    with pytest.raises(UsageError, match="0/1"):
        choose_threshold([0.2, 0.7], [0, 2], rule)
    with pytest.raises(UsageError, match="finite"):
        choose_threshold([float("nan"), 0.7], [0, 1], rule)
    with pytest.raises(UsageError, match="one length"):
        choose_threshold([0.2, 0.7], [1], rule)
    # one distinct score: the only cut flags everything
    got = choose_threshold([0.4, 0.4, 0.4], [0, 1, 0], rule)
    assert (got.threshold, got.recall, got.precision) == pytest.approx((0.2, 1.0, 1 / 3))
    # scores of exactly 1.0 still give a threshold below 1
    got = choose_threshold([1.0, 1.0, 0.2], [1, 1, 0], rule)
    assert got.threshold == pytest.approx(0.6) and got.f1 == 1.0


def _spec(**model: Any) -> ModelSpec:
    return ModelSpec.model_validate({"numeric": ["amount"], "estimator": "logistic_regression", **model})


def test_class_weights_balanced_from_the_train_counts_or_explicit() -> None:
    assert class_weights(_spec(), {0: 990, 1: 10}) is None
    weights = class_weights(_spec(class_weight="balanced"), {0: 990, 1: 10})
    assert weights == pytest.approx({0: 1000 / 1980, 1: 50.0})
    assert weights is not None and 990 * weights[0] == pytest.approx(10 * weights[1])  # equal total weight
    assert class_weights(_spec(class_weight={0: 1, 1: 25}), {0: 5, 1: 5}) == {0: 1.0, 1: 25.0}
    with pytest.raises(TrainingDataError, match="model.class_weight: balanced needs both classes"):
        class_weights(_spec(class_weight="balanced"), {0: 100, 1: 0})


@pytest.mark.parametrize(
    ("usecase", "model", "message"),
    [
        ("fraud", {"threshold": {"rule": "recall_at_precision"}}, r"model.threshold: rule 'recall_at_precision' "
                                                                  r"needs precision"),
        ("fraud", {"threshold": {"rule": "max_f1", "recall": 0.5}}, "model.threshold: recall: not a parameter"),
        ("fraud", {"threshold": {"rule": "best_f1"}}, "model.threshold.rule: got 'best_f1'"),
        ("fraud", {"threshold": {"rule": "precision_at_recall", "recall": 0}}, "model.threshold.recall: got 0"),
        ("fraud", {"threshold": 1.0}, "model.threshold: got 1.0"),
        ("fraud", {"class_weight": {1: 50}}, r"model.class_weight: expected balanced, null or \{0: w0, 1: w1\}"),
        ("fraud", {"class_weight": {0: 1, 1: -2}}, "model.class_weight: expected"),
        ("fraud", {"class_weight": "auto"}, "model.class_weight: got 'auto'"),
        ("eta", {"class_weight": "balanced"}, "model.class_weight: got 'balanced', but label.kind is 'regression'"),
        ("eta", {"threshold": {"rule": "max_f1"}}, "model.threshold: a rule .max_f1. needs a binary label"),
    ],
)
def test_model_keys_are_checked_at_load(usecase: str, model: dict[str, Any], message: str) -> None:
    uc = load_usecase(usecase)
    with pytest.raises(ModelSpecError, match=message):
        uc.replace(model={**uc.raw("model"), **model})


def test_threshold_and_class_weight_round_trip_through_the_logged_spec() -> None:
    spec = _spec(threshold={"rule": "recall_at_precision", "precision": 0.4, "fallback": 0.2},
                 class_weight={0: 1.0, 1: 30.0})
    again = ModelSpec.model_validate(spec.model_dump(mode="json"))  # JSON turns the weight keys into strings
    assert again == spec and again.default_threshold == 0.2
    assert _spec(threshold=0.3).default_threshold == 0.3 and _spec().default_threshold == 0.5
