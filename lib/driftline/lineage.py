"""Commit lineage: what a Delta commit was computed from, stored as its ``userMetadata``.

Every batch job attaches a :class:`Lineage` to the commits it makes (input tables
with the versions read, raw sources with their offsets, the configuration
hashes), and skips a run whose inputs and configuration did not change::

    lin = Lineage.for_job("validate", platform, usecase, run_id,
                          inputs=[table_input(bronze, require_version(spark, bronze, "run ingest"))])
    if not up_to_date(spark, silver, lin):
        write_delta(df, silver, metadata=lin.to_json())

Reading a commit's metadata goes through :mod:`driftline.delta`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from driftline.config import PlatformConfig, UseCaseConfig, config_hash
from driftline.delta import commit_user_metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lineage:
    """What a commit was computed from, stored as the commit's ``userMetadata`` JSON.

    ``inputs`` lists ``{"path": ..., "version": ...}`` for Delta inputs or
    ``{"topic": ..., "offsets": {...}}`` / ``{"file": ...}`` for raw sources.

    Example::

        lin = Lineage.for_job("validate", platform, usecase, run_id,
                              inputs=[{"path": bronze, "version": 3}])
        write_delta(silver, path, metadata=lin.to_json())
    """

    job: str
    usecase: str
    run_id: str
    platform_digest: str
    usecase_digest: str
    inputs: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        """One hash over both configuration digests."""
        return config_hash({"platform": self.platform_digest, "usecase": self.usecase_digest})

    @classmethod
    def for_job(
        cls,
        job: str,
        platform: PlatformConfig,
        usecase: UseCaseConfig,
        run_id: str,
        inputs: Sequence[Mapping[str, Any]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Lineage:
        return cls(
            job=job,
            usecase=usecase.name,
            run_id=run_id,
            platform_digest=platform.digest(),
            usecase_digest=usecase.digest(),
            inputs=tuple(dict(i) for i in inputs),
            extra=dict(extra or {}),
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["inputs"] = [dict(i) for i in self.inputs]
        data["config_hash"] = self.config_hash
        return json.dumps(data, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        data = json.loads(text)
        data.pop("config_hash", None)
        data["inputs"] = tuple(data.get("inputs", ()))
        return cls(**data)

    def same_computation(self, other: Lineage | None) -> bool:
        """True when ``other`` read the same inputs with the same parameters (``extra``) and configuration."""
        return (
            other is not None
            and self.job == other.job
            and self.config_hash == other.config_hash
            and [dict(i) for i in self.inputs] == [dict(i) for i in other.inputs]
            and dict(self.extra) == dict(other.extra)
        )


def table_input(path: str, version: int | None) -> dict[str, Any]:
    """A lineage input entry for a Delta table read at ``version``."""
    return {"path": path, "version": version}


def read_lineage(spark: SparkSession, path: str, version: int | None = None) -> Lineage | None:
    """The :class:`Lineage` of a commit (the latest by default), or None when it has none.

    Example::

        read_lineage(spark, platform.table_path("silver", "fraud_events")).inputs
    """
    text = commit_user_metadata(spark, path, version)
    if not text:
        return None
    try:
        return Lineage.from_json(text)
    except (ValueError, TypeError):
        log.warning("commit metadata of %s is not driftline lineage: %.80s", path, text)
        return None


def up_to_date(spark: SparkSession, path: str, lineage: Lineage) -> bool:
    """True when the latest commit of ``path`` was computed from the same inputs and config."""
    return lineage.same_computation(read_lineage(spark, path))
