"""``driftline queries | alerts``: streaming query metrics and drift alerts from the command line.

    driftline queries                          latest metrics of every streaming query (monitoring/queries)
    driftline alerts check --usecase fraud     apply the N-of-M rule; publish and record new alerts
    driftline alerts check --usecase fraud --dry-run
    driftline alerts list --usecase fraud      the recorded alerts, newest first

``queries`` and ``alerts list`` read the Delta tables with delta-rs (no Spark);
``alerts check`` starts a local Spark session.
"""

from __future__ import annotations

import json
from typing import Any

import click

from driftline.cli.context import Context, pass_ctx
from driftline.config import load_usecase


def _jsonable(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))


@click.command("queries")
@click.option("--query", "name", default=None, help="Only the query with this name.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@pass_ctx
def queries(ctx: Context, name: str | None, as_json: bool) -> None:
    """Latest progress of each streaming query: input and processed rows/s, batch duration,
    event-to-output latency, state rows and rows dropped by the watermark.

    Recorded by every driftline streaming job into monitoring/queries.
    """
    from driftline.query_metrics import format_queries, latest_per_query, metrics_path

    path = metrics_path(ctx.platform)
    rows = [r for r in latest_per_query(path) if name is None or r["query_name"] == name]
    if as_json:
        click.echo(_jsonable(rows))
    elif not rows:
        click.echo(f"no query metrics in {path}" + (f" for query {name!r}" if name else ""))
    else:
        click.echo(format_queries(rows))


@click.group("alerts")
def alerts() -> None:
    """Drift alerts: the N-of-M-windows rule over the monitoring tables.

    The rule is drift.alert in the use case YAML ({n: 2, m: 3, retrain: true,
    cooldown_windows: m} by default). New alerts go to the <uc>.alerts topic and
    monitoring/<uc>_alerts; jobs/pipeline.py --on-alert retrains on them.
    """


@alerts.command("check")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--dry-run", is_flag=True, help="Show every alert the rule raises over the history; publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@pass_ctx
def alerts_check(ctx: Context, usecase: str, dry_run: bool, as_json: bool) -> None:
    """Evaluate the rule; publish and record the alerts not raised before (exit 0 either way)."""
    from driftline.alerts import alert_rule, evaluate_alerts
    from driftline.session import build_session

    uc = load_usecase(usecase)
    rule = alert_rule(uc)  # a bad drift.alert fails before Spark starts
    spark = build_session(ctx.platform, f"driftline-alerts-{uc.name}")
    found = evaluate_alerts(spark, ctx.platform, uc, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in found]))
        return
    what = "alerts the rule raises over the history" if dry_run else "new alerts"
    click.echo(f"{uc.name}: rule {rule.n} of {rule.m} windows (cooldown {rule.cooldown}): {len(found)} {what}")
    for a in found:
        click.echo(f"  {a.summary()}")
        for r in a.reasons:
            click.echo(f"    {r.window_end.isoformat()} {r.text()}")


@alerts.command("list")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@pass_ctx
def alerts_list(ctx: Context, usecase: str, limit: int, as_json: bool) -> None:
    """The recorded alerts of a use case, newest first."""
    from driftline.alerts import list_alerts, monitoring_path
    from driftline.query_metrics import format_table

    uc = load_usecase(usecase)
    path = monitoring_path(ctx.platform, uc, "alerts")
    rows = list_alerts(path, limit)
    if as_json:
        click.echo(_jsonable(rows))
        return
    if not rows:
        click.echo(f"{uc.name}: no alerts recorded in {path}")
        return
    body = [
        [r["alert_id"], r["window_start"], r["window_end"], f"{r['bad_windows']}/{r['windows']}",
         "yes" if r["retrain"] else "no",
         ", ".join(sorted({f"{x['source']}:{x['subject']}" for x in r["reasons"]}))]
        for r in rows
    ]
    click.echo(format_table(["alert_id", "from (UTC)", "to (UTC)", "bad", "retrain", "reasons"], body))


COMMANDS = (queries, alerts)
