"""The alert rule as the stream monitor evaluates it, without Spark: the windowed evaluation
(only the windows around those just written) gives the alerts the whole-history one gives,
whatever the windows, gaps and late sources; the evaluator shared by the monitor's source
threads publishes each alert once, retries a failed evaluation from the same windows and
reads the whole history on its first evaluation."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from driftline.alerts import (
    Alert,
    AlertEvaluator,
    AlertRule,
    Reason,
    WindowStatus,
    build_alerts,
    fire_points,
    rule_alerts,
    tail_fire_points,
)

T0 = datetime(2024, 2, 1, tzinfo=UTC)
W = 60  # window seconds

RULES = [AlertRule(), AlertRule(n=1, m=1), AlertRule(n=1, m=1, cooldown_windows=0), AlertRule(n=2, m=2),
         AlertRule(n=2, m=4, cooldown_windows=1), AlertRule(n=3, m=5, cooldown_windows=6),
         AlertRule(n=2, m=3, cooldown_windows=0)]


def window(i: int, bad: bool) -> WindowStatus:
    start, end = T0 + timedelta(seconds=i * W), T0 + timedelta(seconds=(i + 1) * W)
    return WindowStatus(start, end, (Reason("drift", start, end, "amount", "psi", 0.4, 0.2),) if bad else ())


def history(pattern: str) -> list[WindowStatus]:
    """``"x._x"``: one slot per character, x bad, . good, _ no window (a gap without events)."""
    return [window(i, c == "x") for i, c in enumerate(pattern) if c != "_"]


def test_the_docstring_example() -> None:
    ws = history("x.x....x.x")
    assert fire_points(ws, AlertRule()) == [2, 9]
    assert tail_fire_points(ws[2:], AlertRule(), ws[9].window_end) == [7]
    assert tail_fire_points(ws[6:], AlertRule(), ws[9].window_end) is None


def tails(seed: int, rule: AlertRule, shares: Sequence[float]) -> Iterator[tuple[list[WindowStatus], list[int], int, int]]:
    """150 random histories (bad with one of ``shares``), each with its whole-history fire
    points and every (tail start k, first changed window j) with k <= j <= len."""
    rng = random.Random(seed + rule.n * 100 + rule.m * 10 + rule.cooldown)
    for _ in range(150):
        bad_share = rng.choice(list(shares))
        ws = [window(i, rng.random() < bad_share) for i in range(rng.randint(1, 30))]
        full = fire_points(ws, rule)
        for k in range(len(ws)):
            for j in range(k, len(ws) + 1):
                yield ws, full, k, j


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"n{r.n}m{r.m}c{r.cooldown}")
def test_every_tail_that_settles_the_rule_gives_the_whole_history_answer(rule: AlertRule) -> None:
    settled = 0
    for ws, full, k, j in tails(0, rule, [0.1, 0.3, 0.6, 0.9]):
        first = ws[j].window_end if j < len(ws) else ws[-1].window_end + timedelta(seconds=1)
        got = tail_fire_points(ws[k:], rule, first)
        if got is None:  # without a cooldown, only a tail shorter than m - 1 cannot tell
            assert rule.cooldown > 0 or j - k < rule.m - 1
            continue
        settled += 1
        assert [k + i for i in got] == [i for i in full if i >= j], (ws, k, j)
    assert settled > 1000


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"n{r.n}m{r.m}c{r.cooldown}")
def test_the_last_alert_before_the_tail_anchors_it_and_gives_the_whole_history_answer(rule: AlertRule) -> None:
    anchored = 0
    for ws, full, k, j in tails(7, rule, [0.3, 0.6, 0.9, 1.0]):
        if j in (k, len(ws)):
            continue
        before = [i for i in full if i < j]
        last = ws[before[-1]].window_end if before else None
        got = tail_fire_points(ws[k:], rule, ws[j].window_end, last_fired=last)
        if got is None:
            continue
        anchored += tail_fire_points(ws[k:], rule, ws[j].window_end) is None
        assert [k + i for i in got] == [i for i in full if i >= j], (ws, k, j)
    assert rule.cooldown == 0 or anchored > 100


def test_a_lasting_drift_is_settled_by_its_last_alert() -> None:
    ws = history("xxxxxxxxxx")
    assert fire_points(ws, AlertRule()) == [1, 5, 9]
    assert tail_fire_points(ws[3:], AlertRule(), ws[9].window_end) is None
    assert tail_fire_points(ws[3:], AlertRule(), ws[9].window_end, last_fired=ws[5].window_end) == [6]
    # the anchor needs m - 1 windows before it in the tail, to confirm it could fire
    assert tail_fire_points(ws[4:], AlertRule(), ws[9].window_end, last_fired=ws[5].window_end) is None
    # a window that could not have fired is no anchor
    quiet_then_bad = history("..xxxxxxxx")
    assert tail_fire_points(quiet_then_bad, AlertRule(), quiet_then_bad[9].window_end,
                            last_fired=quiet_then_bad[1].window_end) is None


def test_a_quiet_tail_settles_the_rule_and_a_drifting_one_may_not() -> None:
    rule = AlertRule()  # n 2, m 3, cooldown 3
    quiet = history("xx" + "." * 8 + "x.x")
    assert tail_fire_points(quiet[-8:], rule, quiet[-3].window_end) == [7]   # needs m - 1 + cooldown = 5 before
    assert tail_fire_points(quiet[-7:], rule, quiet[-3].window_end) is None  # 4 before: too few
    drifting = history("xxxxxxxxxxxxx")
    assert tail_fire_points(drifting[-8:], rule, drifting[-1].window_end) is None
    # no cooldown: m - 1 windows of context are enough, whatever fired before
    assert tail_fire_points(drifting[-3:], AlertRule(cooldown_windows=0), drifting[-1].window_end) == [2]


class Lake:
    """The monitoring tables as window statuses by window_end, changed the way the monitor's
    sources change them (a window closes in one source, later in another), plus the alerts
    recorded so far: the whole-history and the windowed evaluation each get their own."""

    def __init__(self) -> None:
        self.windows: dict[datetime, WindowStatus] = {}
        self.reads: list[datetime | None] = []

    def write(self, ws: Sequence[WindowStatus]) -> None:
        for w in ws:
            kept = self.windows.get(w.window_end)
            self.windows[w.window_end] = w if kept is None else WindowStatus(
                w.window_start, w.window_end, kept.reasons + w.reasons)

    def read(self, bound: datetime | None) -> list[WindowStatus]:
        self.reads.append(bound)
        return [self.windows[e] for e in sorted(self.windows) if bound is None or e >= bound]


def evaluate(lake: Lake, rule: AlertRule, recorded: set[str], since: datetime | None,
             ends: dict[str, datetime] | None = None) -> list[str]:
    """evaluate_alerts without Spark and Kafka: the new alert ids, recorded. With ``ends``
    (alert id -> window_end, kept up to date here), the last recorded alert anchors the
    windowed evaluation as the alerts table does (:func:`driftline.alerts.last_recorded`)."""
    def last_alert(before: datetime) -> datetime | None:
        return max((e for e in (ends or {}).values() if e < before), default=None)

    fired = rule_alerts("uc", rule, lake.read, since, W, T0, last_alert=last_alert if ends is not None else None)
    new = [a for a in fired if a.alert_id not in recorded]
    recorded.update(a.alert_id for a in new)
    if ends is not None:
        ends.update((a.alert_id, a.window_end) for a in new)
    return [a.alert_id for a in new]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"n{r.n}m{r.m}c{r.cooldown}")
@pytest.mark.parametrize("seed", range(6))
def test_windowed_evaluation_publishes_what_the_whole_history_evaluation_publishes(rule: AlertRule,
                                                                                    seed: int) -> None:
    """Windows close in batches, with gaps (minutes without events), and a lagging source
    (performance, behind its labels) makes windows bad after they first closed good. At every
    evaluation the monitor's windowed one publishes exactly the alerts the whole-history one
    does, and mostly without reading the whole history."""
    rng = random.Random(seed)
    lake = Lake()
    whole, windowed, ends = set[str](), set[str](), dict[str, datetime]()
    slot, lagging = 0, list[int]()
    partial = 0
    for _ in range(60):
        closing = []
        for _ in range(rng.randint(1, 3)):
            slot += 1 + (rng.random() < 0.15) * rng.randint(1, 3)  # sometimes a gap
            closing.append(window(slot, rng.random() < rng.choice([0.05, 0.3, 0.7])))
        if lagging and rng.random() < 0.3:  # the performance source catches up on older windows
            closing += [window(i, rng.random() < 0.5) for i in lagging]
            lagging = []
        lagging += [slot] if rng.random() < 0.3 else []
        lake.write(closing)
        since = min(w.window_end for w in closing)
        assert evaluate(lake, rule, windowed, since, ends) == evaluate(lake, rule, whole, None)
        partial += lake.reads[-2] is not None
    assert whole == windowed
    assert partial > 50  # nearly every evaluation reads only the recent windows (the first reads all)


# --------------------------------------------------------------------------- the evaluator


def alert(i: int) -> Alert:
    """The alert a 1-of-1 rule raises at bad window ``i``."""
    return build_alerts("uc", [window(i, True)], AlertRule(n=1, m=1), T0)[0]


class Broker:
    """evaluate_alerts' publish-then-record, slow enough that unserialized callers would race."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.recorded: set[str] = set()
        self.calls: list[datetime | None] = []
        self.fail = False

    def evaluate(self, since: datetime | None) -> list[Alert]:
        self.calls.append(since)
        if self.fail:
            raise ConnectionError("broker down")
        fired = [alert(4)]
        new = [a for a in fired if a.alert_id not in self.recorded]
        time.sleep(0.05)
        self.published += [a.alert_id for a in new]
        time.sleep(0.05)
        self.recorded.update(a.alert_id for a in new)
        return new


def test_sources_closing_windows_at_once_publish_an_alert_once() -> None:
    broker = Broker()
    evaluator = AlertEvaluator("uc", AlertRule(), broker.evaluate)
    start = threading.Barrier(3)
    got: dict[str, list[Alert]] = {}

    def close(source: str, table: str) -> None:
        start.wait()
        got[source] = evaluator.windows_closed([T0 + timedelta(minutes=5)], {table: 10})

    threads = [threading.Thread(target=close, args=(s, t)) for s, t in
               (("events", "drift"), ("predictions", "quality"), ("performance", "performance"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(broker.published) == 1 and len(evaluator.published) == 1
    assert sorted(len(a) for a in got.values()) == [0, 0, 1]
    assert broker.calls[0] is None  # the first evaluation reads the whole history
    assert broker.calls[1:] == [T0 + timedelta(minutes=5)] * 2


def test_only_tables_the_rule_reads_evaluate_and_a_failure_is_retried_from_the_same_windows() -> None:
    broker = Broker()
    evaluator = AlertEvaluator("uc", AlertRule(sources=("drift",)), broker.evaluate)
    assert evaluator.windows_closed([T0], {"performance": 4, "drift": 0}) == []
    assert evaluator.windows_closed([], {"drift": 3}) == []
    assert broker.calls == []
    assert [a.alert_id for a in evaluator.windows_closed([T0], ["drift"])] == broker.published
    broker.fail = True
    assert evaluator.windows_closed([T0 + timedelta(minutes=3)], {"drift": 2}) == []  # logged, not raised
    assert evaluator.windows_closed([T0 + timedelta(minutes=4)], {"drift": 2}) == []
    assert broker.calls[1:] == [T0 + timedelta(minutes=3)] * 2  # the failed windows stay pending
    with pytest.raises(ConnectionError):
        evaluator.retry()
    broker.fail = False
    assert evaluator.retry() == [] and broker.calls[-1] == T0 + timedelta(minutes=3)
    assert evaluator.retry() == [] and len(broker.calls) == 5  # nothing pending: no evaluation
    assert evaluator.windows_closed([T0 + timedelta(minutes=6)], {"drift": 1}) == []
    assert broker.calls[-1] == T0 + timedelta(minutes=6) and evaluator.evaluations == 3
