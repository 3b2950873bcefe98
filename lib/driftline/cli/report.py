"""``driftline report``: a use case's monitoring as one self-contained HTML file.

    driftline report --usecase fraud                        .driftline/reports/fraud.html
    driftline report --usecase fraud --out /tmp/fraud.html --open-with-browser yes

Reads the Delta tables with delta-rs (no Spark) and the MLflow registry when its
store exists; :mod:`driftline.html_report` builds the page.
"""

from __future__ import annotations

import webbrowser

import click

from driftline.cli.context import Context, pass_ctx


@click.command("report")
@click.option("--usecase", required=True, help="Use case name (conf/usecases/<name>.yaml) or a path to its YAML.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the HTML file [<lake_root>/../reports/<uc>.html, i.e. .driftline/reports/<uc>.html].")
@click.option("--statistic", default="psi", show_default=True,
              help="Drift statistic the heat map colours by (psi, js, wasserstein, chi2, unseen_share).")
@click.option("--open-with-browser", "open_with", type=click.Choice(["yes", "no"]), default="no", show_default=True,
              help="Open the file in the default web browser once written.")
@pass_ctx
def report(ctx: Context, usecase: str, out: str | None, statistic: str, open_with: str) -> None:
    """Write one self-contained HTML report of a use case and print its path.

    \b
    The page holds, each as an inline SVG chart with a caption:
      - drift per feature over time as a heat map (× = drifted window),
      - PSI per feature over time with each feature's threshold,
      - score distribution: the champion's reference vs the current scores per route and version,
      - routing and model versions over time (observed route shares, canary share, shadow periods,
        every registry event) with the evidence table (reason and metrics of each event),
      - champion vs challenger: test metrics, and metrics on labelled online events per version,
      - online performance per window, split by the model versions that served it,
      - throughput (rows/s, batch duration per streaming query) and event-to-prediction latency,
      - quality rates: validate runs (quarantine, duplicates, reasons) and per-window quality,
      - bad windows and the alerts they raised, with the alerts table.
    A summary on top names the champion and challenger with their test metrics (from the
    MLflow registry when its store exists; skipped with a note when it does not answer),
    the time covered and when the page was generated. A section without data says so in
    one line. The file embeds everything: it opens offline and runs no JavaScript.
    """
    from driftline.html_report import build_report

    path = build_report(ctx.platform, usecase, out=out, statistic=statistic)
    click.echo(str(path))
    if open_with == "yes":
        webbrowser.open(path.as_uri())


COMMANDS = (report,)
