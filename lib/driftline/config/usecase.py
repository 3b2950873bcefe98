"""A use case: one YAML file in ``conf/usecases/``, every section typed and parsed once.

    uc = load_usecase("fraud")
    uc.topic("events")          # 'fraud.events'
    uc.drift.alert.n            # 2: sections are typed objects, not mappings
    uc.replace(routing={"mode": "canary", "share": 0.25})   # a re-validated copy

A bad key in any section fails at load with the section, the key, the value and
what was expected; so do combinations of sections that cannot work (a feature
naming a field the schema lacks, an estimator for another label kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from driftline.config.base import Strict, config_hash, section_error
from driftline.config.platform import _read_yaml, default_conf_dir
from driftline.config.sections import (
    DeliverySpec,
    DriftSpec,
    FeatureDefinitions,
    ModelSpec,
    RoutingSpec,
    StreamingSpec,
    ValidationSpec,
)
from driftline.errors import ConfigError, ModelSpecError, UsageError

FieldType = Literal["string", "int", "long", "double", "boolean", "timestamp"]
TopicKind = Literal["events", "labels", "predictions", "alerts", "dlq"]


class FieldSpec(Strict):
    """One column of a use case's event schema."""

    name: str
    type: FieldType
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = Field(None, ge=1)


class LabelSpec(Strict):
    """Where the label comes from. ``delay_s`` is how late the simulator publishes it."""

    field: str
    kind: Literal["binary", "regression"]
    delay_s: float = Field(300.0, ge=0)


class UseCaseConfig(Strict):
    """One use case: its events, label and the typed settings of every stage.

    Build it with :func:`load_usecase` or :meth:`parse` (which also run the checks
    across sections), and derive variants with :meth:`replace`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    entity_key: str
    event_id: str
    event_time: str
    schema_: list[FieldSpec] = Field(alias="schema", min_length=1)
    label: LabelSpec
    # the generator's own options, checked against its declared option table at load
    simulator: dict[str, Any] = Field(default_factory=dict)
    validation: ValidationSpec = ValidationSpec()
    features: FeatureDefinitions = FeatureDefinitions()
    model: ModelSpec | None = None
    drift: DriftSpec = DriftSpec()
    routing: RoutingSpec = RoutingSpec()
    delivery: DeliverySpec = DeliverySpec()
    streaming: StreamingSpec = StreamingSpec()

    @field_validator("schema_")
    @classmethod
    def _unique_names(cls, fields: list[FieldSpec]) -> list[FieldSpec]:
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names {dupes}")
        return fields

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str | None = None) -> UseCaseConfig:
        """Validate ``data`` (a use case as written in YAML) and check its sections together.

        Example::

            UseCaseConfig.parse(yaml.safe_load(text), source="my.yaml")
        """
        where = source or f"usecase {data.get('name', '?')}"
        try:
            uc = cls.model_validate(dict(data))
        except ValidationError as e:
            only_model = all(err["loc"][:1] == ("model",) for err in e.errors())
            raise section_error(where, e, cls=ModelSpecError if only_model else ConfigError) from e
        from driftline.config.checks import check_usecase

        check_usecase(uc)
        return uc

    def raw(self, section: str) -> dict[str, Any]:
        """A section as written (only the keys that were set), e.g. to merge a change into it."""
        value = getattr(self, "schema_" if section == "schema" else section)
        if isinstance(value, Strict):
            return value.model_dump(exclude_unset=True)
        if isinstance(value, dict):
            return dict(value)
        raise UsageError(f"section: {section!r} is not a mapping section")

    def replace(self, **sections: Any) -> UseCaseConfig:
        """A copy with whole sections (or top-level keys) replaced, validated and checked again.

        Example::

            uc.replace(model={**uc.raw("model"), "estimator": "gbt"})
        """
        data = self.model_dump(by_alias=True, exclude_unset=True)
        data.update({("schema" if k == "schema_" else k): v for k, v in sections.items()})
        return UseCaseConfig.parse(data, source=f"usecase {data.get('name')}")

    def topic(self, kind: TopicKind) -> str:
        return f"{self.name}.{kind}"

    def field(self, name: str) -> FieldSpec:
        for f in self.schema_:
            if f.name == name:
                return f
        raise KeyError(name)

    def digest(self) -> str:
        return config_hash(self.model_dump(mode="json", by_alias=True))


def load_usecase(name_or_path: str | Path, conf_dir: str | Path | None = None) -> UseCaseConfig:
    """Load ``conf/usecases/<name>.yaml`` (or a path to a YAML file).

    Example::

        uc = load_usecase("fraud")
        uc.topic("events")  # 'fraud.events'
    """
    path = usecase_path(name_or_path, conf_dir)
    return UseCaseConfig.parse(read_usecase_yaml(path), source=str(path))


def usecase_path(name_or_path: str | Path, conf_dir: str | Path | None = None) -> Path:
    """The YAML file of a use case: a path ending in ``.yaml``/``.yml`` as given, else
    ``<conf_dir>/usecases/<name>.yaml``, which must exist.

    Example::

        usecase_path("fraud")  # PosixPath('.../conf/usecases/fraud.yaml')
    """
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    usecases = Path(conf_dir or default_conf_dir()) / "usecases"
    path = usecases / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in usecases.glob("*.yaml"))
        raise ConfigError(f"usecase: {str(name_or_path)!r} is not defined: expected one of {known} "
                          f"(conf/usecases/<name>.yaml), or a path to a use case YAML; "
                          f"`driftline usecase init` drafts one from sample records")
    return path


def read_usecase_yaml(path: Path) -> dict[str, Any]:
    """The mapping a use case's YAML file holds, before validation (:class:`ConfigError` if unreadable)."""
    return _read_yaml(path)
