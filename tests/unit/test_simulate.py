"""The event simulators: reproducibility, realism, and that every scenario changes the
statistic it claims and leaves the others alone. No Spark, no broker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.config import FieldSpec, UseCaseConfig, load_usecase
from driftline.errors import DriftlineError, SimulationError
from driftline.simulate import (
    MALFORMED_KINDS,
    Chunk,
    EventGenerator,
    encode_json_lines,
    make_generator,
    parse_duration,
    parse_scenario,
    scenario_help,
    write_history,
)

NOON = "2024-01-01T12:00:00Z"  # with 50 events/s, 20k events stay inside hour 12: one fraud-hour factor


@pytest.fixture(scope="module")
def fraud() -> UseCaseConfig:
    return load_usecase("fraud")


@pytest.fixture(scope="module")
def eta() -> UseCaseConfig:
    return load_usecase("eta")


def _gen(uc: UseCaseConfig, *scenarios: str, seed: int = 3, **kw: object) -> EventGenerator:
    args: dict[str, object] = {"start": NOON, "events_per_second": 50.0, "diurnal": False}
    args.update(kw)
    return make_generator(uc, seed=seed, scenarios=list(scenarios), **args)  # type: ignore[arg-type]


def _chunks(gen: EventGenerator, n: int) -> list[Chunk]:
    return [gen.next_chunk() for _ in range(n)]


def _events(chunks: list[Chunk]) -> pd.DataFrame:
    return pd.concat([c.events for c in chunks], ignore_index=True)


def _labels(chunks: list[Chunk]) -> pd.DataFrame:
    return pd.concat([c.labels for c in chunks], ignore_index=True)


def _within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# -- specs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("covariate_shift@30s:factor=3", ("covariate_shift", {"factor": "3"}, 30.0, None, None, None)),
        ("malformed@10000", ("malformed", {}, None, 10000, None, None)),
        ("malformed@10_000", ("malformed", {}, None, 10000, None, None)),
        ("late", ("late", {}, None, 0, None, None)),
        ("prior_shift@2h..4h:rate=0.05", ("prior_shift", {"rate": "0.05"}, 7200.0, None, 14400.0, None)),
        ("duplicates@1.5m..500:rate=0.1,window=5", ("duplicates", {"rate": "0.1", "window": "5"}, 90.0, None,
                                                     None, 500)),
        ("malformed@1d:kinds=not_json+oversized", ("malformed", {"kinds": "not_json+oversized"}, 86400.0, None,
                                                   None, None)),
    ],
)
def test_scenario_specs_parse(spec: str, expected: tuple[object, ...]) -> None:
    sc = parse_scenario(spec)
    assert (sc.name, dict(sc.params), sc.start_s, sc.start_event, sc.end_s, sc.end_event) == expected
    assert sc.spec == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "expected a spec"),
        ("Covariate@30s", "is not a scenario name"),
        ("late@soon", "neither an event count"),
        ("late@30s..", "nothing after '..'"),
        ("late@30s:rate", "is not KEY=VALUE"),
    ],
)
def test_bad_scenario_specs_are_explained(spec: str, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        parse_scenario(spec)


def test_durations() -> None:
    assert [parse_duration(x) for x in ("250ms", "30s", "5m", "1.5h", "2d", "45", 7)] == [
        0.25, 30.0, 300.0, 5400.0, 172800.0, 45.0, 7.0]
    with pytest.raises(SimulationError, match="duration: got '5 minutes'"):
        parse_duration("5 minutes")


def test_unknown_scenarios_params_and_values_are_named(fraud: UseCaseConfig) -> None:
    with pytest.raises(SimulationError, match="unknown scenario 'drift'.*covariate_shift"):
        _gen(fraud, "drift@10")
    with pytest.raises(SimulationError, match=r"unknown parameter 'factr'; covariate_shift takes \['country', "):
        _gen(fraud, "covariate_shift@10:factr=3")
    with pytest.raises(SimulationError, match=r"rate: got '1.5', expected a value in \[0.0, 1.0\]"):
        _gen(fraud, "malformed:rate=1.5")
    with pytest.raises(SimulationError, match="kinds: got 'json'"):
        _gen(fraud, "malformed:kinds=json")
    with pytest.raises(SimulationError, match="country: got 'XX'.*use new_category"):
        _gen(fraud, "covariate_shift:country=XX")
    with pytest.raises(SimulationError, match="column: got 'event_id'"):
        _gen(fraud, "missing_spike:column=event_id")
    with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
        _gen(fraud, seed=-1)


def test_generator_is_chosen_by_config_not_name(fraud: UseCaseConfig) -> None:
    renamed = fraud.model_copy(update={"name": "payments"})
    assert _gen(renamed).generator == "card_transactions"
    broken = fraud.model_copy(update={"simulator": {**fraud.simulator, "generator": "nope"}})
    with pytest.raises(SimulationError, match=r"simulator\.generator: got 'nope'.*card_transactions"):
        _gen(broken)
    typo = fraud.model_copy(update={"simulator": {**fraud.simulator, "custmers": 5}})
    with pytest.raises(SimulationError, match=r"simulator\.custmers: unknown option"):
        _gen(typo)
    other_schema = load_usecase("eta").model_copy(update={"simulator": fraud.simulator})
    with pytest.raises(SimulationError, match="generator 'card_transactions' produces"):
        _gen(other_schema)
    assert isinstance(SimulationError("x"), DriftlineError)


def test_help_lists_every_scenario_with_defaults() -> None:
    text = scenario_help()
    for name in ("covariate_shift", "prior_shift", "concept_drift", "new_category", "missing_spike", "malformed",
                 "duplicates", "late"):
        assert f"  {name}:" in text
    assert "malformed:rate=0.05,kinds=not_json+wrong_type+missing_field+oversized,size=100000" in text
    assert "late:rate=0.1,lag=600s" in text


# -- encoding ----------------------------------------------------------------------


def test_encoding_is_compact_sorted_typed_and_escaped() -> None:
    fields = [FieldSpec(name="s", type="string"), FieldSpec(name="d", type="double"),
              FieldSpec(name="i", type="int"), FieldSpec(name="b", type="boolean"),
              FieldSpec(name="t", type="timestamp")]
    frame = pd.DataFrame({
        "s": ['a"b\\c', None, "ü\n"],
        "d": [1.5, np.nan, 0.1 + 0.2],
        "i": [3.0, np.nan, 7.0],
        "b": [True, None, False],
        "t": np.array(["2024-01-01T00:00:00.001", "NaT", "2024-02-29T23:59:59.999"], dtype="datetime64[ms]"),
        "extra": [1, 2, 3],
    })
    out = encode_json_lines(frame, fields)
    assert out[0] == b'{"b":true,"d":1.5,"i":3,"s":"a\\"b\\\\c","t":"2024-01-01T00:00:00.001Z"}'
    assert out[1] == b'{"b":null,"d":null,"i":null,"s":null,"t":null}'
    assert json.loads(out[2]) == {"b": False, "d": 0.30000000000000004, "i": 7, "s": "ü\n",
                                  "t": "2024-02-29T23:59:59.999Z"}
    assert b"\n" not in out[2]


def test_generated_events_match_the_schema(fraud: UseCaseConfig, eta: UseCaseConfig) -> None:
    for uc in (fraud, eta):
        gen = _gen(uc, chunk_size=5000)
        chunk = gen.next_chunk()
        names = {f.name for f in uc.schema_}
        for raw, key in zip(gen.encode_events(chunk), gen.event_keys(chunk), strict=True):
            event = json.loads(raw)
            assert set(event) == names
            assert key == event[uc.entity_key].encode()
        frame = chunk.events
        for f in uc.schema_:
            col = frame[f.name]
            if f.required:
                assert col.notna().all(), f.name
            if f.allowed:
                assert set(col.dropna()) <= set(f.allowed), f.name
            if f.min is not None:
                assert col.min() >= f.min and col.max() <= f.max, f.name  # type: ignore[operator]
        assert frame[uc.event_id].is_unique


# -- reproducibility -----------------------------------------------------------------


def _payloads(gen: EventGenerator, n_chunks: int) -> list[bytes]:
    out: list[bytes] = []
    for chunk in _chunks(gen, n_chunks):
        out += gen.encode_events(chunk) + gen.encode_labels(chunk)
    return out


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(fraud: UseCaseConfig, eta: UseCaseConfig) -> None:
    specs = ("covariate_shift@3000", "malformed@100:rate=0.1", "duplicates@50", "late@10s", "missing_spike@5s")
    for uc in (fraud, eta):
        first = _payloads(_gen(uc, *specs, seed=11, chunk_size=2000), 3)
        again = _payloads(_gen(uc, *specs, seed=11, chunk_size=2000), 3)
        other = _payloads(_gen(uc, *specs, seed=12, chunk_size=2000), 3)
        assert first == again
        assert len(first) > 11_000 and first != other
        assert not set(first) & set(other)  # ids carry a seed-dependent prefix: nothing repeats


def test_scenarios_leave_events_before_their_start_untouched(fraud: UseCaseConfig) -> None:
    plain = _payloads(_gen(fraud, chunk_size=2000), 2)
    specs = ("covariate_shift@3000", "prior_shift@3000", "malformed@3000", "duplicates@3000", "late@3000")
    drifted = _payloads(_gen(fraud, *specs, chunk_size=2000), 2)
    # events 0..1999 and their labels come first, then the second chunk's 1000 untouched events
    assert drifted[:2000] == plain[:2000]
    assert drifted[4000:5000] == plain[4000:5000]
    assert drifted[5000:6000] != plain[5000:6000]


def test_event_times_come_from_the_start_time_not_the_clock(fraud: UseCaseConfig) -> None:
    chunk = _gen(fraud, start="2030-05-05T10:00:00Z").next_chunk()
    times = chunk.events["event_time"]
    assert times.min() >= pd.Timestamp("2030-05-05T10:00:00")
    assert times.is_monotonic_increasing
    # 50 events per second on average
    span = (times.max() - times.min()).total_seconds()
    assert 10_000 / span == pytest.approx(50, rel=0.05)


def test_history_follows_a_daily_profile(eta: UseCaseConfig) -> None:
    gen = make_generator(eta, seed=1, events_per_second=0.5, start="2024-01-01T00:00:00Z")
    arrivals = np.concatenate([c.arrival_s for c in _chunks(gen, 4)])
    per_hour = np.bincount(gen.hours(arrivals), minlength=24)
    assert per_hour[19] > 5 * per_hour[3]  # dinner rush vs the middle of the night


# -- labels ------------------------------------------------------------------------


def test_label_time_is_event_time_plus_the_delay(fraud: UseCaseConfig, eta: UseCaseConfig) -> None:
    for uc in (fraud, eta):
        chunk = _gen(uc, "late@0:rate=0.3").next_chunk()
        merged = chunk.labels.merge(chunk.events, on=uc.event_id, how="inner", validate="one_to_one")
        delay = (merged["label_time"] - merged[uc.event_time]).dt.total_seconds()
        assert len(merged) == len(chunk) and (delay == uc.label.delay_s).all()
        labels = [json.loads(b) for b in _gen(uc, "late@0:rate=0.3").encode_labels(chunk)]
        assert set(labels[0]) == {uc.event_id, uc.label.field, "label_time"}


def test_fraud_is_rare_and_learnable(fraud: UseCaseConfig) -> None:
    gen = make_generator(fraud, seed=5, events_per_second=0.5, overrides={"fraud_rate": 0.02})
    chunks = _chunks(gen, 6)
    ev = _events(chunks)
    y = _labels(chunks)["is_fraud"].to_numpy()
    assert _within_binomial(int(y.sum()), len(y), 0.02)  # whole days: the night factor averages out
    foreign = (ev["country"] != ev["customer_id"].map(_home_country(ev, y))).to_numpy()
    online = (ev["channel"] == "online").to_numpy()
    night = (ev["event_time"].dt.hour < 6).to_numpy()
    assert np.median(ev["amount"][y]) > 3 * np.median(ev["amount"][~y])
    assert foreign[y].mean() > 0.4 > 0.1 > foreign[~y].mean()
    assert online[y].mean() > 0.6 > 0.35 > online[~y].mean()
    assert y[night].mean() > 2 * y[~night].mean()


def _home_country(ev: pd.DataFrame, y: np.ndarray) -> dict[str, str]:
    """Each customer's most frequent country among legitimate payments."""
    legit = ev.loc[~y, ["customer_id", "country"]]
    return legit.groupby("customer_id")["country"].agg(lambda s: s.value_counts().index[0]).to_dict()


def test_delivery_time_follows_prep_habits_distance_and_load(eta: UseCaseConfig) -> None:
    quiet = make_generator(eta, seed=2, events_per_second=0.02, diurnal=False)
    busy = make_generator(eta, seed=2, events_per_second=2.0, diurnal=False)
    q_chunk = quiet.next_chunk()
    q_ev, q_lab = q_chunk.events, q_chunk.labels
    b_lab = busy.next_chunk().labels
    minutes = q_lab["delivery_minutes"].to_numpy()
    # same draws, only the order rate differs: a busier kitchen is slower
    assert b_lab["delivery_minutes"].mean() > q_lab["delivery_minutes"].mean() + 3
    far = q_ev["distance_km"].to_numpy() > 5
    assert minutes[far].mean() > minutes[~far].mean() + 8
    prep = pd.Series(quiet.prep_mean[q_ev["restaurant_id"].str[1:].astype(int)])  # type: ignore[attr-defined]
    assert np.corrcoef(prep, minutes)[0, 1] > 0.3


# -- scenarios -----------------------------------------------------------------------


def test_covariate_shift_scales_amounts_and_leaves_labels_alone(fraud: UseCaseConfig) -> None:
    plain = _chunks(_gen(fraud), 2)
    drift = _chunks(_gen(fraud, "covariate_shift@10000:factor=3"), 2)
    before, after = drift[0].events, drift[1].events
    assert after["amount"].mean() == pytest.approx(3 * before["amount"].mean(), rel=0.1)
    ratio = after["amount"] / plain[1].events["amount"]
    assert ratio.to_numpy() == pytest.approx(3.0, rel=0.01, abs=0.01)
    pd.testing.assert_frame_equal(_labels(drift), _labels(plain))  # identical labels: rate unchanged
    for col in ("country", "merchant_category", "channel", "device"):
        pd.testing.assert_series_equal(after[col], plain[1].events[col])


def test_covariate_shift_can_move_a_countrys_share(fraud: UseCaseConfig) -> None:
    plain = _gen(fraud).next_chunk().events
    moved = _gen(fraud, "covariate_shift:factor=1,country=US,share=0.3").next_chunk().events
    base = (plain["country"] == "US").mean()
    assert (moved["country"] == "US").mean() == pytest.approx(0.3 + 0.7 * base, abs=0.02)
    assert (moved["amount"] == plain["amount"]).all()


def test_prior_shift_changes_the_fraud_rate_not_each_class(fraud: UseCaseConfig) -> None:
    gen = _gen(fraud, "prior_shift@20000:rate=0.08", overrides={"fraud_rate": 0.02})
    chunks = _chunks(gen, 4)
    hour_factor = gen.fraud_hour[12]  # type: ignore[attr-defined]
    y_before = _labels(chunks[:2])["is_fraud"].to_numpy()
    y_after = _labels(chunks[2:])["is_fraud"].to_numpy()
    assert _within_binomial(int(y_before.sum()), len(y_before), 0.02 * hour_factor)
    assert _within_binomial(int(y_after.sum()), len(y_after), 0.08 * hour_factor)
    ev_before, ev_after = _events(chunks[:2]), _events(chunks[2:])
    legit_before = ev_before["amount"][~y_before].mean()
    assert ev_after["amount"][~y_after].mean() == pytest.approx(legit_before, rel=0.05)
    assert (ev_after["channel"][y_after] == "online").mean() == pytest.approx(
        (ev_before["channel"][y_before] == "online").mean(), abs=0.12)


def test_concept_drift_changes_what_fraud_looks_like(fraud: UseCaseConfig) -> None:
    kw = {"overrides": {"fraud_rate": 0.05}}
    plain = _chunks(_gen(fraud, **kw), 4)  # type: ignore[arg-type]
    drift = _chunks(_gen(fraud, "concept_drift@20000", **kw), 4)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(_labels(drift)[["event_id", "is_fraud"]], _labels(plain)[["event_id", "is_fraud"]])
    ev_b, ev_a = _events(drift[:2]), _events(drift[2:])
    y_b, y_a = _labels(drift[:2])["is_fraud"].to_numpy(), _labels(drift[2:])["is_fraud"].to_numpy()
    online_b, online_a = (ev_b["channel"] == "online").to_numpy(), (ev_a["channel"] == "online").to_numpy()
    # P(fraud | online) collapses, P(fraud | pos) rises: the relation changed, the label rate did not
    assert y_b[online_b].mean() > 3 * y_a[online_a].mean()
    assert y_a[~online_a].mean() > 2 * y_b[~online_b].mean()
    assert y_a.mean() == pytest.approx(y_b.mean(), abs=0.01)
    assert ev_a["amount"].mean() == pytest.approx(ev_b["amount"].mean(), rel=0.1)


def test_new_category_appears_only_after_its_start(fraud: UseCaseConfig) -> None:
    plain = _chunks(_gen(fraud), 2)
    drift = _chunks(_gen(fraud, "new_category@10000:share=0.2"), 2)
    assert "crypto" not in set(drift[0].events["merchant_category"])
    share = (drift[1].events["merchant_category"] == "crypto").mean()
    assert share == pytest.approx(0.2, abs=0.02)
    pd.testing.assert_series_equal(drift[1].events["amount"], plain[1].events["amount"])
    custom = _gen(fraud, "new_category:column=country,value=ZZ,share=0.5").next_chunk().events
    assert (custom["country"] == "ZZ").mean() == pytest.approx(0.5, abs=0.03)


def test_missing_spike_nulls_the_column(eta: UseCaseConfig) -> None:
    gen = _gen(eta, "missing_spike@5000:rate=0.4")
    chunk = gen.next_chunk()
    value = chunk.events["order_value"]
    assert value[:5000].notna().all()
    assert value[5000:].isna().mean() == pytest.approx(0.4, abs=0.03)
    assert chunk.events["distance_km"].notna().all()
    nulls = sum(json.loads(p)["order_value"] is None for p in gen.encode_events(chunk))
    assert nulls == value.isna().sum()
    truth = gen.ground_truth()[0]
    assert (truth["start_index"], truth["affected_events"], truth["active_events"]) == (5000, nulls, 5000)


def test_malformed_fraction_and_kinds_are_really_malformed(fraud: UseCaseConfig) -> None:
    gen = _gen(fraud, "malformed@0:rate=0.2,size=5000")
    chunks = _chunks(gen, 2)
    kinds = _events(chunks)["_malformed"]
    assert _within_binomial(int(kinds.notna().sum()), 20_000, 0.2)
    truth = gen.ground_truth()[0]
    assert truth["kinds"] == {k: int((kinds == k).sum()) for k in MALFORMED_KINDS}
    assert min(truth["kinds"].values()) > 800  # an even mix
    schema = {f.name: f for f in fraud.schema_}
    json_types = {"string": str, "double": (int, float), "timestamp": str}
    seen = dict.fromkeys(MALFORMED_KINDS, 0)
    for chunk in chunks:
        for raw, kind in zip(gen.encode_events(chunk), chunk.events["_malformed"], strict=True):
            if kind is None:
                event = json.loads(raw)
                assert set(event) == set(schema) and len(raw) < 1000
                continue
            seen[kind] += 1
            if kind == "not_json":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(raw)
                continue
            event = json.loads(raw)
            if kind == "wrong_type":
                wrong = [k for k, v in event.items() if v is not None
                         and not isinstance(v, json_types[schema[k].type])]  # type: ignore[arg-type]
                assert len(wrong) == 1 and wrong[0] != "event_id"
            elif kind == "missing_field":
                missing = set(schema) - set(event)
                assert len(missing) == 1 and schema[missing.pop()].required
                assert "event_id" in event
            elif kind == "oversized":
                assert len(raw) > 5000 and set(event) == set(schema)
    assert seen == truth["kinds"]


def test_duplicates_repeat_earlier_events_byte_for_byte(fraud: UseCaseConfig) -> None:
    gen = _gen(fraud, "duplicates@1000:rate=0.05,window=300", chunk_size=4000)
    chunks = _chunks(gen, 3)
    ev = _events(chunks)
    payloads = [p for c in chunks for p in gen.encode_events(c)]
    dup = ev["_duplicate_of"].to_numpy()
    rows = np.flatnonzero(dup >= 0)
    assert _within_binomial(len(rows), 11_000, 0.05)
    assert (rows >= 1000).all() and (dup[rows] < rows).all()
    assert (dup[dup[rows]] == -1).all()  # a repeat of a repeat points at the original
    for r in rows:
        assert payloads[r] == payloads[dup[r]]
        assert ev.at[r, "event_id"] == ev.at[dup[r], "event_id"]
    labels = _labels(chunks)
    assert labels["event_id"].is_unique and len(labels) == len(ev) - len(rows)
    assert gen.ground_truth()[0]["affected_events"] == len(rows)


def test_late_events_carry_older_event_times(eta: UseCaseConfig) -> None:
    gen = _gen(eta, "late@60s:rate=0.25,lag=2m")
    chunk = gen.next_chunk()
    ev = chunk.events
    late = ev["_late_ms"].to_numpy() > 0
    arrival_ms = np.round(chunk.arrival_s * 1000).astype(np.int64)
    event_ms = ((ev["order_time"] - pd.Timestamp(NOON).tz_localize(None)).dt.total_seconds() * 1000).round()
    assert (event_ms.to_numpy() == arrival_ms - ev["_late_ms"].to_numpy()).all()
    assert not late[chunk.arrival_s < 60].any()
    assert late[chunk.arrival_s >= 60].mean() == pytest.approx(0.25, abs=0.02)
    assert ev["_late_ms"][late].mean() / 1000 == pytest.approx(120, rel=0.1)
    out_of_order = (ev["order_time"].diff().dt.total_seconds() < 0).sum()
    assert out_of_order > 0.15 * late.sum()
    truth = gen.ground_truth()[0]
    assert truth["start_time"] >= "2024-01-01T12:01:00.000Z"
    first = truth["start_index"]
    assert chunk.arrival_s[first] >= 60 > chunk.arrival_s[first - 1]


def test_eta_scenarios_change_their_statistic(eta: UseCaseConfig) -> None:
    plain = _gen(eta, events_per_second=0.3).next_chunk()
    shifted = _gen(eta, "prior_shift:offset=10", events_per_second=0.3).next_chunk()
    assert (shifted.labels["delivery_minutes"] - plain.labels["delivery_minutes"]).mean() == pytest.approx(10, abs=0.1)
    pd.testing.assert_frame_equal(shifted.events, plain.events)
    drift = _gen(eta, "concept_drift:factor=2", events_per_second=0.3).next_chunk()
    pd.testing.assert_frame_equal(drift.events, plain.events)
    extra = drift.labels["delivery_minutes"] - plain.labels["delivery_minutes"]
    assert np.corrcoef(extra, plain.events["distance_km"])[0, 1] > 0.9
    cov = _gen(eta, "covariate_shift:factor=2", events_per_second=0.3).next_chunk()
    assert cov.events["distance_km"].mean() == pytest.approx(2 * plain.events["distance_km"].mean(), rel=0.05)


def test_ground_truth_counts_stop_where_the_run_stops(fraud: UseCaseConfig) -> None:
    gen = _gen(fraud, "malformed@2000:rate=0.5", "late@50000")
    gen.next_chunk()
    truth = gen.ground_truth(upto_index=3000)
    assert truth[0]["start_index"] == 2000 and truth[0]["active_events"] == 1000
    assert _within_binomial(truth[0]["affected_events"], 1000, 0.5)
    assert sum(truth[0]["kinds"].values()) == truth[0]["affected_events"]
    assert truth[1]["start_index"] is None and truth[1]["start_time"] is None
    assert gen.ground_truth()[0]["active_events"] == 8000


def test_history_files(eta: UseCaseConfig, tmp_path: Path) -> None:
    gen = make_generator(eta, seed=4, events_per_second=0.2, scenarios=["malformed@12h:rate=0.1", "duplicates@6h"])
    result = write_history(gen, tmp_path / "h", duration_s=86400)
    events = (tmp_path / "h" / "events.jsonl").read_bytes().splitlines()
    labels = [json.loads(x) for x in (tmp_path / "h" / "labels.jsonl").read_text().splitlines()]
    truth = [json.loads(x) for x in (tmp_path / "h" / "ground_truth.jsonl").read_text().splitlines()]
    touched = [json.loads(x) for x in (tmp_path / "h" / "event_truth.jsonl").read_text().splitlines()]
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert len(events) == result.events == manifest["events"]
    assert result.events == pytest.approx(0.2 * 86400, rel=0.05)
    dups = [t for t in touched if t["duplicate_of"] is not None]
    assert len(labels) == result.labels == result.events - len(dups)
    assert [t["scenario"] for t in truth] == ["malformed", "duplicates"]
    assert truth[0]["start_time"] >= "2024-01-01T12:00:00.000Z"
    broken = [t for t in touched if t["malformed"] is not None and t["duplicate_of"] is None]
    assert len(broken) == truth[0]["affected_events"]
    times = [json.loads(e).get("order_time") for e in events if e.endswith(b"}")]
    assert max(t for t in times if isinstance(t, str)) < manifest["end_time"] == "2024-01-02T00:00:00.000Z"
