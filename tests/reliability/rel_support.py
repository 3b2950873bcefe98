"""Helpers of the reliability battery (``make reliability``): a small fraud-like use case
under a fresh name, a small champion, kcat, Delta reads and ``./spark-submit.sh`` run as
a user runs it. Fixtures: tests/conftest.py and tests/reliability/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.registry import promote, register_version
from support import gold_frame  # noqa: F401 - re-exported for the battery's tests

FRAUD = load_usecase("fraud")
SCRIPT = PROJECT_ROOT / "spark-submit.sh"


def small_usecase(**updates: Any) -> UseCaseConfig:
    """The fraud use case under a fresh name (own topics, tables and registered model):
    30 customers, small micro-batches, the champion serving alone."""
    name = f"rl{uuid.uuid4().hex[:8]}"
    sim = {**FRAUD.simulator, "customers": 30, "events_per_hour": 600, **updates.pop("simulator", {})}
    streaming = {"trigger": "availableNow", "max_offsets_per_trigger": 150, **updates.pop("streaming", {})}
    routing = updates.pop("routing", {"mode": "champion"})
    return FRAUD.replace(name=name, simulator=sim, streaming=streaming, routing=routing, **updates)


def register_champion(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, run_id: str) -> None:
    assert register_version(spark, platform, uc, run_id) == 1
    promote(spark, platform, uc, 1, force=True)


def table(path: str | Path) -> pd.DataFrame:
    return cast(pd.DataFrame, DeltaTable(str(path)).to_pandas())


def kcat(bootstrap: str, topic: str, lines: list[bytes], tmp: Path, *args: str) -> None:
    """Publish one message per line with kcat (Debian's kcat, not the project's clients)."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed: run bin/ensure-system (apt-get install kcat)"
    assert not any(b"\n" in line for line in lines)
    path = tmp / f"kcat-{uuid.uuid4().hex[:6]}.lines"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    subprocess.run([exe, "-P", "-b", bootstrap, "-t", topic, "-X", "message.max.bytes=8000000", *args, "-l",
                    str(path)], check=True, timeout=120)


def write_usecase(uc: UseCaseConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(uc.model_dump(mode="json", by_alias=True)))
    return path


@dataclass(frozen=True)
class Submitted:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def platform_args(platform: PlatformConfig) -> list[str]:
    """``--set`` options pointing a job at the test's lake, checkpoints, broker and MLflow store."""
    args = ["--set", f"lake_root={platform.lake_root}", "--set", f"checkpoint_root={platform.checkpoint_root}",
            "--set", f"mlflow.home={platform.mlflow.home}", "--set", "spark.ui_enabled=false",
            "--set", "spark.shuffle_partitions=2", "--set", "spark.log_level=ERROR"]
    if platform.kafka.bootstrap_servers:
        args += ["--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap_servers}"]
    if platform.mlflow.tracking_uri:
        args += ["--set", f"mlflow.tracking_uri={platform.mlflow.tracking_uri}"]
    return args


def submit(script: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> Submitted:
    """``./spark-submit.sh <script> <args>`` as a user runs it (local[1])."""
    started = time.monotonic()
    res = subprocess.run([str(SCRIPT), script, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "SPARK_MASTER": "local[1]", **(env or {})})
    return Submitted(res.returncode, res.stdout, res.stderr, time.monotonic() - started)


def files_under(root: str | Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (empty when ``root`` does not exist)."""
    base = Path(root)
    if not base.exists():
        return {}
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
