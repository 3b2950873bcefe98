"""spark-submit.sh as a user runs it: a real spark-submit of a streaming entry point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from deltalake import DeltaTable

from driftline.config import PROJECT_ROOT, PlatformConfig
from driftline.demo import produce_json_events

SCRIPT = PROJECT_ROOT / "spark-submit.sh"


def test_help_explains_usage() -> None:
    out = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "Usage: ./spark-submit.sh" in out and "--master" in out and "jobs/ingest.py" in out


def test_bad_file_is_rejected_with_usage() -> None:
    res = subprocess.run([str(SCRIPT), "notes.txt"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "is not a module under jobs/ or streaming/" in res.stderr


def test_submit_streaming_job_to_local_master(platform: PlatformConfig, topic: str, tmp_path: Path) -> None:
    assert produce_json_events(platform, topic, 500, run_id="sub") == 500
    table = tmp_path / "raw"
    env = {**os.environ, "SPARK_MASTER": "local[1]"}
    res = subprocess.run(
        [str(SCRIPT), "streaming/kafka_to_delta.py", "--topic", topic, "--table", str(table),
         "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}",
         "--set", f"checkpoint_root={tmp_path / 'cp'}", "--set", "spark.ui_enabled=false"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ids = sorted(json.loads(v)["seq"] for v in DeltaTable(str(table)).to_pandas()["value"])
    assert ids == list(range(500))
