"""`ArchConfig`: a preset's `arch` section typed, as `ModelConfig` types its `model`.

Every key a preset may set has its default here, once; `from_dict` refuses an unknown key
(naming the closest one) and a value out of range, in one line naming the key. The family
completes it: a missing objective is the family's first (`FamilySpec.objectives[0]`), an
objective the family lacks is refused, and the family's own rule (`FamilySpec.check_arch`,
e.g. "prefix_lm means nothing with objective=lm") runs last. A family reading keys of its
own declares them in a subclass (`FamilySpec.arch_config`).

The family functions keep taking the `arch` mapping (a dict, a DictConfig, or model.json's
record) and read it through `ArchConfig.of(arch)`. Light: no torch here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arches.errors import UserError, closest

NUMBERS = ("mask_rate", "noise_density", "mean_span_length", "poisson_lambda", "gmask_ratio")
FLAGS = ("prefix_lm", "document_mask")


@dataclass(frozen=True)
class ArchConfig:
    name: str | None = None  # the preset's name (sweeps/arch/<name>.yaml)
    family: str | None = None  # arches.registry.FAMILIES
    objective: str | None = None  # None: the family's first objective
    # attention: bidirectional over the prefix (decoders' ND:PLM and ND:MLM, Wang et al. 2022 §3)
    prefix_lm: bool = False
    document_mask: bool = False  # packed documents see only themselves (and count positions from 0)
    mask_rate: float = 0.15  # MLM's and GLM's masked share (Devlin et al. 2019; Du et al. 2022 §2.2.1)
    noise_density: float = 0.15  # span corruption's noise share (Raffel et al. 2020 §3.1.4)
    mean_span_length: float = 3.0  # span corruption's mean noise span
    poisson_lambda: float = 3.0  # GLM's span lengths, Poisson(λ) (Du et al. 2022 §2.2.1)
    gmask_ratio: float = 0.0  # GLM: the share of windows given one document-level [gMASK] span
    model: Mapping[str, Any] | None = field(default_factory=dict)  # ModelConfig's knobs (arches.registry.model_config)
    special_tokens: Mapping[str, Any] | None = None  # an import's tokens for arches' roles (arches.interop)
    hf_architecture: str | None = None  # the transformers class an import came from (arches.interop)

    def __post_init__(self) -> None:
        for key in NUMBERS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"arch.{key}={value!r} must be a number")
        for key in FLAGS:
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"arch.{key}={getattr(self, key)!r} must be true or false")
        if not 0.0 <= self.gmask_ratio <= 1.0:
            raise UserError(f"arch.gmask_ratio={self.gmask_ratio} must be in [0, 1]")
        if self.mean_span_length <= 0:
            raise UserError(f"arch.mean_span_length={self.mean_span_length} must be positive (T5: 3)")
        if self.poisson_lambda < 0:
            raise UserError(f"arch.poisson_lambda={self.poisson_lambda} must be at least 0 (GLM: 3)")

    @classmethod
    def of(cls, arch: Any) -> ArchConfig:
        """`arch` (a mapping, a DictConfig or an ArchConfig) typed and checked against its family."""
        if isinstance(arch, ArchConfig):
            return arch
        from arches.registry import plain  # the registry imports the family files, which import this

        return cls.from_dict(plain(arch))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ArchConfig:
        """The typed section: the family's own class (`FamilySpec.arch_config`) when `values`
        name a family, its objective defaulted and checked and the family's rule run."""
        from arches.registry import family

        spec = family(values["family"]) if values.get("family") is not None else None
        kind = spec.arch_config if spec is not None else cls
        names = [f.name for f in dataclasses.fields(kind)]
        for key in values:
            if key not in names:
                raise UserError(f"unknown arch key '{key}'; valid: {', '.join(names)}.{closest(key, names)}")
        if spec is None:
            return kind(**values)
        settings = kind(**{**values, "objective": values.get("objective") or spec.objectives[0]})
        if settings.objective not in spec.objectives:
            article = "an" if spec.name[:1] in "aeiou" else "a"
            raise UserError(
                f"arch.objective={settings.objective!r} is not {article} {spec.name} objective; "
                f"choose one of: {', '.join(spec.objectives)}"
            )
        if spec.check_arch is not None:
            spec.check_arch(settings)
        return settings
