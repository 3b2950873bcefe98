"""Issue 14, item 9 for the monitor: its state table levels off over hours of event time.

(The scoring query's state is soaked in tests/integration/test_scoring.py: five hours of
event time, the state holds exactly the events within retention.)

A stream monitor that never stops (trigger ``1 second``) over three hours of event time, sent
in 12 rounds of 15 minutes, 10-minute windows and 10 minutes of lateness. Every round also
carries events late but within the lateness (their window still open) and, from round 2,
events of a window the watermark already passed: window ``k`` gets such events in rounds
``2k + 2`` and ``2k + 3``, so its late count must add up across a window close.

After each round the state table holds the open windows only: every window in it ends after
the watermark (newest event time sent minus the lateness), so at most three, and its late
rows belong to windows of that round's late events (the count moves to
``monitoring/<uc>_quality`` and leaves the state). The code before this test kept one late
row per window and micro-batch until the run ended. At the end, every window's volume and
``late_events`` equal the pandas counts of what was sent, and they add up to every
acknowledged event.

Negative control: the late count so far not carried across a window close (the emitter
forgetting what the quality table holds): the windows late in two rounds count only the
second round's events, and the test sees it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from rel_support import FRAUD, small_usecase, table
from test_faults_data import events_frame, send

from driftline import catalog
from driftline.config import PlatformConfig
from driftline.monitoring import CLOSED, LATE, WindowEmitter, start_monitor, state_path
from driftline.profile import build_reference_profile

START = pd.Timestamp("2024-04-01T00:00:00")  # naive UTC, aligned to the windows
WINDOW, LATENESS, ROUND = pd.Timedelta(minutes=10), pd.Timedelta(minutes=10), pd.Timedelta(minutes=15)
IN_ORDER, WITHIN, BEYOND = 40, 3, 4  # events per round


def rounds_of(n_rounds: int, rng: np.random.Generator) -> list[dict[str, list[pd.Timestamp]]]:
    """The event times of each round: ``beyond`` (a final window), ``within`` (a window still
    open) and ``in_order``, sent in that order."""
    out = []
    for r in range(n_rounds):
        begin = START + r * ROUND
        spans = {"in_order": (begin, ROUND, IN_ORDER)}
        if r >= 1:
            spans["within"] = (begin - pd.Timedelta(minutes=5), pd.Timedelta(minutes=4), WITHIN)
        if r >= 2:
            spans["beyond"] = (START + (r // 2 - 1) * WINDOW, WINDOW, BEYOND)
        out.append({
            part: sorted(first + pd.to_timedelta(rng.integers(0, int(span.total_seconds()), n), unit="s"))
            for part, (first, span, n) in spans.items()})
    return out


def window_of(t: pd.Timestamp) -> pd.Timestamp:
    return t.floor(WINDOW)


def naive(times: pd.Series) -> pd.Series:
    """Delta's UTC timestamps as naive UTC, like the frame's."""
    return pd.to_datetime(times, utc=True).dt.tz_localize(None)


@pytest.mark.parametrize("n_rounds,carry", [(12, True), (6, False)], ids=["soak", "control-no-carry"])
def test_monitor_state_levels_off_over_hours_of_event_time_and_late_counts_add_up(
    spark: SparkSession, platform: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    n_rounds: int, carry: bool
) -> None:
    if not carry:
        monkeypatch.setattr(WindowEmitter, "_late_so_far", lambda self, dropped: [])
    uc = small_usecase(drift={**FRAUD.raw("drift"), "window": "10m", "lateness": "10m", "origin": "epoch"})
    plan = rounds_of(n_rounds, np.random.default_rng(9))
    total = sum(len(ts) for r in plan for ts in r.values())
    frame = events_frame(uc, total, seed=91, start="2024-04-01T00:00:00Z")
    profile = build_reference_profile(spark.createDataFrame(frame[["amount", "merchant_category", "country"]]),
                                      ["amount"], ["merchant_category", "country"], bins=10)
    times = [t for r in plan for part in ("beyond", "within", "in_order") for t in r.get(part, [])]
    frame[uc.event_time] = pd.to_datetime(times)
    parts = [part for r in plan for part in ("beyond", "within", "in_order") for _ in r.get(part, [])]

    state = state_path(platform, uc, "events")
    queries = start_monitor(spark, platform, uc, profile, trigger="1 second", sources=["events"], alerts=False)
    acked, held, sent, newest = [], [], 0, None
    try:
        (query,) = queries.queries
        for r, round_ in enumerate(plan):
            n = sum(len(ts) for ts in round_.values())
            acked += send(platform, uc, frame, list(range(sent, sent + n)))
            sent += n
            newest = max(round_["in_order"])
            query.processAllAvailable()
            rows = table(state)
            watermark = newest - LATENESS
            open_ = rows[~rows["kind"].isin([CLOSED, LATE])]
            ends = set(naive(open_["window_end"]))
            late_ends = set(naive(rows.loc[rows["kind"] == LATE, "window_end"]))
            this_round = {window_of(t) + WINDOW for t in round_.get("beyond", [])}
            held.append((len(rows), len(ends), len(late_ends)))
            # only open windows are held, and late rows only of this round's late events
            assert all(e > watermark for e in ends) and len(ends) <= 3, (r, sorted(ends), watermark)
            assert late_ends <= this_round, (r, sorted(late_ends), sorted(this_round))
    finally:
        for q in queries.queries:
            q.stop()
    assert len(acked) == len(frame)  # the oracle: every event acknowledged
    print("state rows, open windows, late windows after each round:", held)

    quality = table(catalog.path(platform, "quality", uc))
    quality["window_start"] = naive(quality["window_start"])
    windows = pd.Series(pd.to_datetime(frame[uc.event_time])).dt.floor(WINDOW)
    part = pd.Series(parts)
    beyond = (part == "beyond").to_numpy()
    volume = quality[(quality["metric"] == "volume") & (quality["column"] == "events")]
    got_volume = dict(zip(volume["window_start"], volume["value"], strict=True))
    late = quality[quality["metric"] == "late_events"]
    got_late = dict(zip(late["window_start"], late["value"], strict=True))
    want_late = windows[beyond].value_counts().astype(float).to_dict()
    assert len(want_late) == n_rounds // 2 - 1 and set(want_late.values()) == {2.0 * BEYOND}  # two rounds each
    # every window written (the last ones are still open: the monitor never stopped)
    closed = windows[~beyond].value_counts().astype(float).to_dict()
    closed = {w: n for w, n in closed.items() if w + WINDOW <= newest - LATENESS}
    assert {w: got_volume.get(w) for w in closed} == closed
    if not carry:  # the control: each window late in two rounds counts only the second round's events
        assert got_late == {w: n - BEYOND for w, n in want_late.items()}, (got_late, want_late)
        return
    assert got_late == want_late
    open_events = int((~beyond & (windows + WINDOW > newest - LATENESS)).sum())
    assert sum(got_volume.values()) + sum(got_late.values()) + open_events == len(acked)
    assert dt.timedelta(hours=2, minutes=45) < newest - START  # hours of event time
