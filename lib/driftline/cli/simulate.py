"""``driftline simulate history`` and ``driftline produce``: simulated events to files or Kafka.

    driftline simulate history --usecase fraud --days 30 --out data/fraud-history
    driftline produce --usecase fraud --rate 5000 --duration 60s --scenario covariate_shift@30s:factor=3
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from driftline.cli.context import Context, pass_ctx
from driftline.errors import SimulationError
from driftline.simulate import parse_duration, parse_scenario, scenario_help

SPEC_HELP = """\b
Scenario specs (--scenario, repeatable):
  NAME[@START[..END]][:KEY=VALUE,...]
  START/END is an event count (10000) or a simulated-time offset from the
  start (30s, 5m, 1.5h, 2d); no @START = from the first event, no ..END =
  until the end. Lists use + (kinds=not_json+oversized). When scenarios of
  the same name overlap, the later one on the command line wins.
  Each scenario is logged with its start event index and start time
  (--ground-truth FILE, or ground_truth.jsonl for history)."""


def _generator_usecases() -> dict[str, list[str]]:
    """generator name -> use cases whose simulator section names it (for the help text)."""
    import yaml

    from driftline.config import default_conf_dir

    found: dict[str, list[str]] = {}
    for path in sorted((default_conf_dir() / "usecases").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        sim = data.get("simulator") if isinstance(data, dict) else None
        if isinstance(sim, dict) and sim.get("generator"):
            found.setdefault(str(sim["generator"]), []).append(str(data.get("name", path.stem)))
    return found


def _scenario_block() -> str:
    return "\b\nScenarios, KEY=default parameters:\n" + "\n".join(
        "  " + line for line in scenario_help(usecases=_generator_usecases()).splitlines()
    )


def _scenarios(specs: tuple[str, ...]) -> list[Any]:
    try:
        return [parse_scenario(s) for s in specs]
    except SimulationError as e:
        raise click.BadParameter(str(e), param_hint="--scenario") from e


def _start(value: str | None) -> str | datetime | None:
    if value == "now":
        return datetime.now(UTC)
    return value


def _write_truth(path: str | None, truth: list[dict[str, Any]]) -> None:
    if path:
        Path(path).write_text("".join(json.dumps(t, sort_keys=True) + "\n" for t in truth))


def _echo_truth(truth: list[dict[str, Any]]) -> None:
    for t in truth:
        if t["start_index"] is None:
            click.echo(f"  scenario {t['spec']}: not reached")
        else:
            click.echo(f"  scenario {t['spec']}: from event {t['start_index']} ({t['start_time']}), "
                       f"{t['affected_events']} of {t['active_events']} events changed")


@click.group()
def simulate() -> None:
    """Generate simulated events and labels offline (history for batch training)."""


@simulate.command(
    "history",
    help=f"""Write DAYS of simulated history for a use case as JSON lines.

Files in OUT: events.jsonl (raw payloads, one per line, malformed ones
included), labels.jsonl, ground_truth.jsonl (one record per scenario),
event_truth.jsonl (every event a malformed/duplicates/late scenario touched)
and manifest.json. Events follow a daily profile; times start at --start
(default simulator.start).

\b
Example:
  driftline simulate history --usecase fraud --days 30 --out data/fraud \\
      --scenario covariate_shift@20d:factor=2

{SPEC_HELP}

{_scenario_block()}
""",
)
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--days", type=float, default=30.0, show_default=True, help="Simulated days to write.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--seed", type=int, default=None, help="Random seed [simulator.seed].")
@click.option("--rate-per-hour", type=float, default=None, help="Average events per hour [simulator.events_per_hour].")
@click.option("--start", default=None, help="ISO-8601 start time, or 'now' [simulator.start].")
@click.option("--scenario", "specs", multiple=True, metavar="SPEC", help="A scenario spec (repeatable).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def simulate_history(
    usecase: str, days: float, out_dir: str, seed: int | None, rate_per_hour: float | None,
    start: str | None, specs: tuple[str, ...], progress: bool,
) -> None:
    from tqdm import tqdm

    from driftline.config import load_usecase
    from driftline.simulate import make_generator, write_history

    if days <= 0:
        raise click.BadParameter(f"got {days}, expected a positive number of days", param_hint="--days")
    if rate_per_hour is not None and rate_per_hour <= 0:
        raise click.BadParameter(f"got {rate_per_hour}, expected > 0", param_hint="--rate-per-hour")
    uc = load_usecase(usecase)
    gen = make_generator(uc, seed=seed, start=_start(start), scenarios=_scenarios(specs),
                         events_per_second=rate_per_hour / 3600 if rate_per_hour else None)
    expected = int(gen.events_per_second * days * 86400)
    with tqdm(total=expected, unit="ev", unit_scale=True, disable=not progress, desc=f"{uc.name} history") as bar:
        result = write_history(gen, out_dir, days * 86400, progress=bar.update)
    click.echo(
        f"{result.events} events and {result.labels} labels from {result.start_time} to {result.end_time} "
        f"written to {result.out_dir}"
    )
    _echo_truth(result.ground_truth)


@click.command(
    "produce",
    help=f"""Publish a simulated event stream of a use case to Kafka.

Creates <usecase>.events and <usecase>.labels if missing, then publishes
events keyed by the use case's entity key at --rate events per second, and
labels keyed by the event id once the simulated clock has passed their
label_time (event time + label.delay_s). Simulated time advances --speedup
seconds per wall second, so a scenario @30s starts about 30 s into a run at
--speedup 1, and with the fraud use case's 300 s label delay, --speedup 60
makes labels arrive after 5 wall seconds. Labels not yet due at the end are
not sent (they would come from the future) unless --flush-labels is given.
Waits for the broker's acknowledgements and exits 1 if any message failed.
Uses kafka.bootstrap_servers, or the embedded broker (driftline kafka start).

\b
Examples:
  driftline produce --usecase fraud --rate 5000 --duration 60s
  driftline produce --usecase fraud --rate 2000 --duration 2m --speedup 60 \\
      --scenario covariate_shift@30s:factor=3 \\
      --scenario malformed@1m:rate=0.02,kinds=not_json+wrong_type \\
      --ground-truth truth.jsonl
  driftline produce --usecase eta --max --events 500000 --no-labels

{SPEC_HELP}

{_scenario_block()}
""",
)
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--rate", type=float, default=1000.0, show_default=True,
              help="Events per wall-clock second; 0 = as fast as possible.")
@click.option("--max", "as_fast", is_flag=True, help="As fast as possible (same as --rate 0).")
@click.option("--duration", default=None, metavar="DURATION",
              help="How long, e.g. 60s, 5m. With a rate this sets the count (rate x duration). "
                   "Default 60s when --events is not given.")
@click.option("--events", type=int, default=None, help="Stop after this many events.")
@click.option("--scenario", "specs", multiple=True, metavar="SPEC", help="A scenario spec (repeatable), see below.")
@click.option("--seed", type=int, default=None, help="Random seed [simulator.seed].")
@click.option("--labels/--no-labels", default=True, show_default=True, help="Also publish labels to <usecase>.labels.")
@click.option("--flush-labels", is_flag=True, help="At the end, also send the labels that are not due yet.")
@click.option("--speedup", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall second (ignored with --max: then simulated time "
                   "advances at simulator.events_per_hour).")
@click.option("--start", default=None,
              help="ISO-8601 time of the first event, or 'now' [simulator.stream_start].")
@click.option("--ground-truth", "truth_path", type=click.Path(dir_okay=False), default=None,
              help="Write the scenario log (JSON lines) to this file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@pass_ctx
def produce(
    ctx: Context, usecase: str, rate: float, as_fast: bool, duration: str | None, events: int | None,
    specs: tuple[str, ...], seed: int | None, labels: bool, flush_labels: bool, speedup: float,
    start: str | None, truth_path: str | None, progress: bool,
) -> None:
    from tqdm import tqdm

    from driftline.config import load_usecase
    from driftline.produce import produce_usecase

    if as_fast:
        rate = 0.0
    if rate < 0:
        raise click.BadParameter(f"got {rate}, expected events per second >= 0", param_hint="--rate")
    if speedup <= 0:
        raise click.BadParameter(f"got {speedup}, expected > 0", param_hint="--speedup")
    if events is not None and events < 0:
        raise click.BadParameter(f"got {events}, expected >= 0", param_hint="--events")
    try:
        duration_s = parse_duration(duration) if duration is not None else None
    except SimulationError as e:
        raise click.BadParameter(str(e), param_hint="--duration") from e
    if duration_s is None and events is None:
        duration_s = 60.0
    scenarios = _scenarios(specs)
    uc = load_usecase(usecase)
    total = events
    if rate > 0 and duration_s is not None:
        total = min(int(round(rate * duration_s)), events if events is not None else sys.maxsize)

    with tqdm(total=total, unit="ev", unit_scale=True, disable=not progress, desc=uc.topic("events")) as bar:
        def report(n: int, errors: int) -> None:
            bar.update(n)
            if errors:
                bar.set_postfix(errors=errors, refresh=False)

        result = produce_usecase(
            ctx.platform, uc, rate=rate, duration_s=duration_s, events=events, seed=seed, scenarios=scenarios,
            labels=labels, flush_labels=flush_labels, speedup=speedup, start=_start(start), progress=report,
        )
    _write_truth(truth_path, result.ground_truth)
    click.echo(result.summary())
    _echo_truth(result.ground_truth)
    if not result.ok:
        sys.exit(1)


COMMANDS = (simulate, produce)
