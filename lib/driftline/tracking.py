"""MLflow wiring: where runs go and what every training run records.

The tracking store is ``mlflow.tracking_uri`` or a local SQLite file under
``mlflow.home``; artifacts of a local store live next to it (never in the
current directory). A training run records enough to reproduce and audit it::

    uri = configure_mlflow(platform)
    with mlflow.start_run(experiment_id=experiment_for(platform, uc)) as run:
        log_training_run(result, spec=spec, uc=uc, platform=platform, data=DataRef(path, 3),
                         profile=profile, input_example=example)

Lineage params: ``data.path``, ``data.version``, ``git.commit``,
``config.platform_hash``, ``config.usecase_hash``, ``config.model_hash``,
``seed``, ``spark.version``. The training and test rows are also MLflow dataset
inputs (contexts ``training`` and ``testing``, source: the Delta path at that
version), so MLflow's UI shows a run's data. The model's environment names every
Python package it needs to load and score, at the installed versions
(:data:`MODEL_PACKAGES`: ``requirements.txt`` and ``conda.yaml`` of the logged
model), and the JVM artefacts of ``conf/jvm/`` as Maven coordinates (run artifact
``environment/jvm_requirements.txt``, tag ``driftline.jvm_packages``, a value for
``spark.jars.packages``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, config_hash
from driftline.config.platform import default_conf_dir
from driftline.errors import UsageError
from driftline.training import ModelSpec, TrainResult

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
PROFILE_ARTIFACT = "reference_profile.json"
SPEC_ARTIFACT = "model_spec.json"
SEARCH_ARTIFACT = "search_results.json"
JVM_ARTIFACT = "environment/jvm_requirements.txt"
JVM_TAG = "driftline.jvm_packages"
# the Python distributions a logged Spark model needs to load and score (pyspark.ml, Delta, MLflow's
# spark flavour and pyfunc, and what they import), pinned at the installed versions
MODEL_PACKAGES = ("pyspark", "py4j", "delta-spark", "mlflow", "pandas", "numpy", "scipy", "pyarrow", "cloudpickle")
# conf/jvm/<file>: what each set of JVM artefacts is for, and whether every Spark session needs it
JVM_POMS = {"spark-connectors.pom.xml": ("Delta Lake and the Kafka source/sink (every job)", True),
            "object-store.pom.xml": ("the S3A connector (only for an s3a:// lake)", False)}


@dataclass(frozen=True)
class DataRef:
    """A Delta table pinned at a version: what a model was trained on."""

    path: str
    version: int


def tracking_uri(platform: PlatformConfig) -> str:
    """The tracking (and registry) URI the platform config points at."""
    return platform.mlflow.resolved_tracking_uri(Path(platform.base_dir))


def artifact_location(platform: PlatformConfig) -> str | None:
    """Artifacts of a local store go to ``<mlflow.home>/artifacts``; a server decides its own."""
    uri = tracking_uri(platform)
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return Path(platform.path(platform.mlflow.home), "artifacts").resolve().as_uri()
    return None


def configure_mlflow(platform: PlatformConfig) -> str:
    """Point MLflow's tracking and registry at the platform's store; returns the URI.

    Example::

        configure_mlflow(platform)  # 'sqlite:////…/.driftline/mlflow/mlflow.db'
    """
    uri = tracking_uri(platform)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_for(platform: PlatformConfig, uc: UseCaseConfig) -> str:
    """The id of experiment ``driftline-<uc>``, created (with the local artifact root) if missing."""
    name = f"driftline-{uc.name}"
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location(platform)))


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the project, or ``"unknown"`` outside a git checkout.

        >>> len(git_commit()) in (40, 7)
        True
    """
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=str(cwd or PROJECT_ROOT), capture_output=True, text=True,
            timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit or "unknown"


def pip_requirements() -> list[str]:
    """Explicit requirements of a logged Spark model (inference would take ~20 s): every
    package of :data:`MODEL_PACKAGES` at its installed version.

        >>> pip_requirements()[0].startswith("pyspark==")
        True
    """
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_PACKAGES]


def jvm_requirements(conf_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The Maven coordinates (``group:artifact:version``, properties filled in) of the
    dependencies in ``conf/jvm`` (:data:`JVM_POMS`), each with its pom, what it is for and
    whether every session needs it (``required``: ``yes``/``no``).

    Example::

        [r["coordinate"] for r in jvm_requirements()][:2]
        # ['org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0', 'io.delta:delta-spark_4.2_2.13:4.4.0']
    """
    base = Path(conf_dir) if conf_dir is not None else default_conf_dir() / "jvm"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    out: list[dict[str, str]] = []
    for name, (purpose, required) in JVM_POMS.items():
        path = base / name
        if not path.is_file():
            continue
        root = ET.parse(path).getroot()
        props = {el.tag.split("}")[-1]: (el.text or "").strip() for el in root.findall("m:properties/*", ns)}

        def fill(text: str | None, props: dict[str, str] = props) -> str:
            return re.sub(r"\$\{([^}]+)\}", lambda m: props.get(m.group(1), m.group(0)), (text or "").strip())

        for dep in root.findall("m:dependencies/m:dependency", ns):
            parts = [fill(dep.findtext(f"m:{k}", None, ns)) for k in ("groupId", "artifactId", "version")]
            out.append({"coordinate": ":".join(parts), "pom": f"conf/jvm/{name}", "for": purpose,
                        "required": "yes" if required else "no"})
    return out


def log_environment() -> list[str]:
    """Record the JVM artefacts in the active run (artifact ``environment/jvm_requirements.txt``
    and tag ``driftline.jvm_packages``); returns the coordinates."""
    reqs = jvm_requirements()
    lines = ["# JVM artefacts (Maven coordinates) to load and score this model with Spark, from conf/jvm/*.pom.xml;",
             "# the Python side is the model's requirements.txt. As spark-submit --packages / spark.jars.packages:",
             "# " + ",".join(r["coordinate"] for r in reqs if r["required"] == "yes")]
    lines += [f"{r['coordinate']}  # {r['pom']}: {r['for']}" for r in reqs]
    mlflow.log_text("\n".join(lines) + "\n", JVM_ARTIFACT)
    mlflow.set_tag(JVM_TAG, ",".join(r["coordinate"] for r in reqs if r["required"] == "yes"))
    return [r["coordinate"] for r in reqs]


def log_datasets(datasets: Mapping[str, Any], *, data: DataRef, uc: UseCaseConfig) -> None:
    """Log each Spark frame of ``datasets`` (context -> frame: ``training``, ``testing``) as an
    MLflow dataset input of the active run, its source the Delta table ``data`` at its version."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.spark_dataset import SparkDataset

    # The source is built here, not by mlflow.data.from_spark: that one decides whether the path
    # is a Delta table by listing it on the local filesystem, so an s3a:// (or hdfs://) lake
    # failed the training run. The table was just read as Delta at this version. The version goes
    # in as text, as from_spark passes it: MLflow drops a falsy version, and version 0 is falsy.
    source = DeltaDatasetSource(path=data.path, delta_table_version=str(data.version))  # type: ignore[arg-type]
    table = Path(data.path.rstrip("/")).name
    for context, frame in datasets.items():
        ds = SparkDataset(frame, source=source, targets=uc.label.field, name=f"{table}@v{data.version}/{context}")
        mlflow.log_input(ds, context=context)


def lineage_params(
    uc: UseCaseConfig, spec: ModelSpec, platform: PlatformConfig, data: DataRef, spark_version: str
) -> dict[str, str]:
    """The lineage every run carries as params (and tags)."""
    return {
        "usecase": uc.name,
        "data.path": data.path,
        "data.version": str(data.version),
        "git.commit": git_commit(),
        "config.platform_hash": platform.digest(),
        "config.usecase_hash": uc.digest(),
        "config.model_hash": config_hash(spec.model_dump(mode="json")),
        "seed": str(spec.split.seed),
        "spark.version": spark_version,
    }


def spec_params(spec: ModelSpec) -> dict[str, str]:
    """The model spec flattened into MLflow params (values truncated to MLflow's limit)."""
    flat = {
        "estimator": spec.estimator,
        "numeric": ",".join(spec.numeric),
        "categorical": ",".join(spec.categorical),
        "impute": spec.impute,
        "scale": str(spec.scale),
        "pca.k": str(spec.pca.k) if spec.pca else "none",
        "threshold": json.dumps(spec.model_dump(mode="json")["threshold"], sort_keys=True),
        "class_weight": json.dumps(spec.model_dump(mode="json")["class_weight"], sort_keys=True),
        "window": spec.window or "all",  # the last stretch of event time trained on (model.window)
        "split.method": spec.split.method,
        "split.fractions": json.dumps(list(spec.split.fractions)),
        "search.method": spec.search.method,
        "search.n": str(spec.search.n),
        "search.validation": spec.search.validation,
        "search.space": json.dumps(spec.search.model_dump(mode="json")["params"], sort_keys=True),
        **{f"estimator.{k}": json.dumps(v) for k, v in sorted(spec.estimator_params.items())},
    }
    return {k: v[:6000] for k, v in flat.items()}


def log_training_run(
    result: TrainResult,
    *,
    spec: ModelSpec,
    uc: UseCaseConfig,
    platform: PlatformConfig,
    data: DataRef,
    spark_version: str,
    profile: dict[str, Any],
    input_example: pd.DataFrame,
    datasets: Mapping[str, Any] | None = None,
) -> str:
    """Log params, lineage, search results, test metrics, the reference profile,
    the dataset inputs (``datasets``: context -> Spark frame, see :func:`log_datasets`),
    the JVM artefacts and the Spark model (signature, input example, explicit pip
    requirements) into the active run; returns the logged model's URI.

    Example::

        with mlflow.start_run(experiment_id=experiment_for(platform, uc)):
            uri = log_training_run(result, spec=spec, uc=uc, platform=platform, data=ref,
                                   spark_version=spark.version, profile=profile, input_example=example)
    """
    if mlflow.active_run() is None:
        raise UsageError("log_training_run: needs an active MLflow run (use mlflow.start_run())")
    from mlflow.models import infer_signature
    from mlflow.spark import log_model

    lineage = lineage_params(uc, spec, platform, data, spark_version)
    mlflow.log_params({**lineage, **spec_params(spec), **{f"rows.{k}": str(v) for k, v in result.rows.items()}})
    mlflow.log_params({f"best.{k}": json.dumps(v) for k, v in result.best_params.items()})
    mlflow.set_tags({f"driftline.{k}": v for k, v in lineage.items()})
    mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items()})
    if result.threshold is not None:  # binary: the decision threshold, and what it reached on validation
        mlflow.log_params({"decision_threshold": repr(result.threshold),
                           "class_weights": json.dumps(result.class_weights, sort_keys=True)})
        mlflow.log_metrics({"decision_threshold": result.threshold,
                            **(result.threshold_choice.metrics() if result.threshold_choice else {})})
    mlflow.log_table(pd.DataFrame(result.search_results), SEARCH_ARTIFACT)
    mlflow.log_dict(profile, PROFILE_ARTIFACT)
    mlflow.log_dict(spec.model_dump(mode="json"), SPEC_ARTIFACT)
    if datasets:
        log_datasets(datasets, data=data, uc=uc)
    log_environment()

    output = pd.DataFrame({"prediction": [0.0] * len(input_example)})
    signature = infer_signature(input_example, output)
    info = log_model(
        result.model, artifact_path=MODEL_ARTIFACT, signature=signature, input_example=input_example,
        pip_requirements=pip_requirements(),
    )
    return str(info.model_uri)
