"""A Spark standalone cluster on this machine, from the Spark that pyspark ships: one master and
N workers, each its own JVM on loopback. Used by the cluster test and the cluster benchmark; a
user can try ``./spark-submit.sh --master spark://…`` the same way before a real cluster.

    with StandaloneCluster(home=Path("/tmp/spark"), workers=2) as cluster:
        subprocess.run(["./spark-submit.sh", "--master", cluster.url, "jobs/train.py", ...])
        cluster.completed_apps()   # what the master ran: cores, memory, duration
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from driftline.kafka.broker import free_port


def spark_home() -> Path:
    """The Spark distribution inside the pyspark package (bin/, jars/, sbin/)."""
    import pyspark

    return Path(pyspark.__file__).parent


class StandaloneCluster:
    """Start with ``start()`` (or ``with``); ``url`` is the master to submit to, ``ui`` its web UI."""

    def __init__(self, home: Path, workers: int = 2, cores: int = 1, memory: str = "2g",
                 host: str = "127.0.0.1", start_timeout_s: float = 120) -> None:
        self.home, self.workers, self.cores, self.memory, self.host = home, workers, cores, memory, host
        self.start_timeout_s = start_timeout_s
        port, ui_port = free_port(host), free_port(host)
        self.url, self.ui = f"spark://{host}:{port}", f"http://{host}:{ui_port}"
        self._ports = (port, ui_port)
        self._procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> None:
        home = spark_home()
        env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": self.host,
               "SPARK_LOG_DIR": str(self.home), "SPARK_WORKER_DIR": str(self.home / "work")}
        with (self.home / f"{name}.log").open("wb") as out:
            self._procs.append(subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> StandaloneCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        port, ui_port = self._ports
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", self.host,
                    "--port", str(port), "--webui-port", str(ui_port))
        for i in range(self.workers):
            self._spawn(f"worker-{i + 1}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", self.host,
                        "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port(self.host)))
        deadline = time.monotonic() + self.start_timeout_s
        while self.alive_workers() < self.workers:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    log = (self.home / "master.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"a standalone process exited with {proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.workers} workers did not register with {self.url} in "
                                   f"{self.start_timeout_s:.0f}s; logs in {self.home}")
            time.sleep(1)
        return self

    def state(self) -> dict[str, Any]:
        """The master's JSON state (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as resp:
            return dict(json.load(resp))

    def alive_workers(self) -> int:
        try:
            workers = self.state().get("workers", [])
        except OSError:
            return 0
        return sum(1 for w in workers if w.get("state") == "ALIVE")

    def completed_apps(self) -> list[dict[str, Any]]:
        return list(self.state().get("completedapps", []))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def isolated_executor_python(directory: Path) -> Path:
    """A Python for executors with this environment's packages but not an editable driftline:
    ``-S`` skips the ``.pth`` files, and site-packages come after Spark's own PYTHONPATH (which
    holds what ``--py-files`` shipped). Set it as PYSPARK_PYTHON to prove the library reaches
    the executors through ``spark-submit.sh`` alone."""
    site = sysconfig.get_paths()["purelib"]
    wrapper = directory / "executor-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def submit_job(master: str, file: str, *args: str, home: Path, settings: dict[str, object],
               env: dict[str, str], timeout_s: float = 1800) -> tuple[float, str]:
    """Run ``./spark-submit.sh --master MASTER FILE ARGS --set k=v ...`` as a user would; its
    output goes to ``home/<file stem>.log``. Returns (wall seconds, output); raises with the
    output's tail when the job fails."""
    from driftline.config import PROJECT_ROOT

    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    started = time.monotonic()
    res = subprocess.run([str(PROJECT_ROOT / "spark-submit.sh"), "--master", master, file, *args, *sets],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    wall = time.monotonic() - started
    out = res.stdout + res.stderr
    (home / f"{Path(file).stem}.log").write_text(out)
    if res.returncode != 0:
        raise RuntimeError(f"{file} on {master} exited with {res.returncode}:\n{out[-4000:]}")
    return wall, out
