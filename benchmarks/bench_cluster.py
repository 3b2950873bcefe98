"""The batch pipeline and the scoring query on a two-worker standalone cluster beside local[2].

    python -m benchmarks.bench_cluster                      # 20,000 events, one run each
    python -m benchmarks.bench_cluster --events 50000 --repeat 2

One input on the embedded broker (produced before anything is timed). Each master runs the
same two ``./spark-submit.sh`` commands a user would run, into its own lake and MLflow store:
``jobs/pipeline.py --once`` (ingest, validate, build_features, train) and
``streaming/score.py --trigger availableNow``. Reported per master: the wall time of each
command (JVM and session start-up included) and the times the jobs log for their own steps
(pipeline steps; the scoring batches). The cluster is a master and two one-core workers on
this machine, so it has the same two cores as local[2]: the ratio is the cost of separate
executor JVMs and the network between them, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_train import _git_commit, _load, _machine
from driftline.config import PROJECT_ROOT, load_platform, load_usecase
from driftline.kafka.broker import EmbeddedBroker, free_port
from driftline.produce import produce_usecase
from driftline.standalone import StandaloneCluster, submit_job

STEP = re.compile(r"\[\d+/\d+\] (\w+): .*\((\d+)s\)$", re.M)
BATCH = re.compile(r"batch \d+: .* in ([0-9.]+)s \(", re.M)


def publish(bootstrap: str, uc_file: Path, events: int) -> None:
    """The input, before anything is timed: events and every label, on the embedded broker."""
    platform = load_platform(env={}, overrides=[f"kafka.bootstrap_servers={bootstrap}"])
    result = produce_usecase(platform, load_usecase(uc_file), events=events, seed=5, flush_labels=True)
    assert result.ok and result.acked == events, result


def run_master(master: str, home: Path, bootstrap: str, uc_file: Path, env: dict[str, str]) -> dict[str, float]:
    home.mkdir(parents=True)
    settings: dict[str, object] = {
        "lake_root": home / "lake", "checkpoint_root": home / "checkpoints", "kafka.bootstrap_servers": bootstrap,
        "mlflow.tracking_uri": f"sqlite:///{home / 'mlflow.db'}", "mlflow.home": home / "mlflow",
        "spark.ui_enabled": "false",
    }
    out: dict[str, float] = {}
    wall, log = submit_job(master, "jobs/pipeline.py", "--usecase", str(uc_file), "--once", home=home,
                           settings=settings, env=env)
    out["pipeline_wall_s"] = wall
    for step, seconds in STEP.findall(log):
        out[f"{step}_s"] = float(seconds)
    wall, log = submit_job(master, "streaming/score.py", "--usecase", str(uc_file), "--trigger", "availableNow",
                           home=home, settings=settings, env=env)
    out["score_wall_s"] = wall
    out["score_batches_s"] = sum(float(s) for s in BATCH.findall(log))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per master, alternating [1]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    machine = _machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    name = f"fraudb_{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load((PROJECT_ROOT / "conf/usecases/fraud.yaml").read_text())
    data["name"] = name
    uc_file = tmp / f"{name}.yaml"
    uc_file.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "MLFLOW_"))}
    env.setdefault("PYSPARK_PYTHON", sys.executable)

    base = load_platform(env={})
    broker = EmbeddedBroker(home=tmp / "kafka", jars=Path(base.path(base.jars_dir)) / "kafka", port=free_port(),
                            controller_port=free_port())
    broker.start()
    results: dict[str, list[dict[str, float]]] = {"local[2]": [], "standalone 2×1 core": []}
    try:
        publish(broker.bootstrap, uc_file, args.events)
        with StandaloneCluster(home=tmp / "standalone", workers=2) as cluster:
            masters = {"local[2]": "local[2]", "standalone 2×1 core": cluster.url}
            for i in range(args.repeat):
                for label, master in masters.items():
                    home = tmp / f"run{i}-{'local' if master.startswith('local') else 'cluster'}"
                    figures = run_master(master, home, broker.bootstrap, uc_file, env)
                    print(f"{label} run {i + 1}: {json.dumps(figures)}", flush=True)
                    results[label].append(figures)
    finally:
        broker.stop()
    machine["load_average_at_end"] = _load()
    report: dict[str, Any] = {"events": args.events, "repeat": args.repeat, "git": _git_commit(),
                              "machine": machine, "results": results}
    print(to_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def to_markdown(report: dict[str, Any]) -> str:
    results: dict[str, list[dict[str, float]]] = report["results"]
    keys = ["pipeline_wall_s", "ingest_s", "validate_s", "build_features_s", "train_s", "score_wall_s",
            "score_batches_s"]
    labels = list(results)
    lines = [f"| median of {report['repeat']} run(s), {report['events']:,} events | " + " | ".join(labels)
             + f" | {labels[1]} ÷ {labels[0]} |", "|---|" + "---:|" * (len(labels) + 1)]
    for key in keys:
        values = []
        for label in labels:
            runs = sorted(r[key] for r in results[label] if key in r)
            values.append(runs[len(runs) // 2] if runs else float("nan"))
        ratio = values[1] / values[0] if values[0] else float("nan")
        lines.append(f"| {key.removesuffix('_s').replace('_', ' ')} (s) | "
                     + " | ".join(f"{v:.1f}" for v in values) + f" | {ratio:.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
