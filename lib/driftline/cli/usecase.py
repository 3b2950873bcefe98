"""``driftline usecase check | init``: your own data, from configuration only.

    driftline usecase check --usecase fraud                    every problem of a use case, before any data
    driftline usecase check --usecase my/own.yaml
    driftline usecase init --events sample.jsonl --labels labels.jsonl --name payments
                                                               a commented draft in conf/usecases/payments.yaml

``check`` exits 0 when the use case is clean and 2 (a configuration error, as every job)
when it is not, after printing one line per problem. The logic is in :mod:`driftline.onboarding`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from driftline.cli.context import Context, pass_ctx
from driftline.jobs import EXIT_USAGE


@click.group("usecase")
def usecase() -> None:
    """Check a use case against every stage, or draft one from samples of your events."""


@usecase.command("check")
@click.option("--usecase", "name", required=True, metavar="NAME|PATH",
              help="Use case name (conf/usecases/<name>.yaml) or a path to its YAML.")
@pass_ctx
def check(ctx: Context, name: str) -> None:
    """Compile every stage of a use case against its schema, without data, and list every problem.

    \b
    Validation, features (point in time, online, streaming windows), model, drift and
    scoring plans are compiled on empty frames (a local Spark session, no job runs).
    One line per problem names the YAML key and what to do; exit code 2 when there is any.
    """
    from driftline.onboarding import check_usecase_file
    from driftline.session import build_session

    report = check_usecase_file(name, platform=ctx.platform,
                                session=lambda: build_session(ctx.platform, "driftline-usecase-check"))
    click.echo("\n".join(report.lines()))
    if not report.ok:
        sys.exit(EXIT_USAGE)


def _default_name(events: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(events).stem).strip("_").lower()
    return stem if stem[:1].isalpha() else f"usecase_{stem}"


@usecase.command("init")
@click.option("--events", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A JSON-lines sample of your events (one JSON object per line).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A JSON-lines sample of the labels: event id, label, time the label became known.")
@click.option("--name", default=None, help="Use case name: topics <name>.events, tables <layer>/<name>_... "
                                           "[the events file's name].")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the YAML [conf/usecases/<name>.yaml].")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--limit", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Read at most this many records of each sample.")
def init(events: str, labels: str | None, name: str | None, output: str | None, force: bool, limit: int) -> None:
    """Draft a use case from samples: field types and limits, ids, label, features, model, drift.

    \b
    Example:
      driftline usecase init --events sample.jsonl --labels labels.jsonl --name payments
      driftline usecase check --usecase payments
    """
    from driftline.config import default_conf_dir, load_usecase
    from driftline.errors import ConfigError, UsageError
    from driftline.onboarding import draft_usecase, read_jsonl

    name = name or _default_name(events)
    target = Path(output) if output else default_conf_dir() / "usecases" / f"{name}.yaml"
    if target.exists() and not force:
        raise click.BadParameter(f"{target} exists; pass --force to overwrite it", param_hint="--output")
    sample = read_jsonl(events, limit)
    label_sample = read_jsonl(labels, limit) if labels else None
    try:
        draft = draft_usecase(sample.records, label_sample.records if label_sample else None, name,
                              sources=(Path(events).name, Path(labels).name if labels else None))
    except UsageError as e:
        raise click.UsageError(str(e)) from e
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(draft.text)

    n_labels = f" and {len(label_sample.records)} labels" if label_sample else ""
    click.echo(f"drafted {target} from {len(sample.records)} events{n_labels}")
    for path, skipped in ((events, sample.skipped), (labels, label_sample.skipped if label_sample else 0)):
        if skipped:
            click.echo(f"  ({skipped} lines of {path} were not JSON objects and were ignored)")
    click.echo("inferred:")
    click.echo("\n".join(f"  {line}" for line in draft.inferred))
    click.echo("review before use:")
    click.echo("\n".join(f"  - {line}" for line in draft.review) or "  - every section of the draft")
    try:
        load_usecase(target)
    except ConfigError as e:
        click.echo(f"the draft does not load yet: {e}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"next: driftline usecase check --usecase {target}")


COMMANDS = (usecase,)
