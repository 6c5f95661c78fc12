"""The explicit table of families, and what every caller needs from it.

Family modules are imported lazily, so `arches list` or the CLI's help never pays
for a family it does not use; a miss lists the valid names and the closest one.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arches.core import ModelConfig
from arches.core.config import SIZE_KEYS
from arches.errors import UserError, unknown
from arches.families.objective import ArchConfig
from arches.families.spec import FamilySpec

# One line per family: name -> module exporting SPEC.
FAMILIES: dict[str, str] = {
    "decoder": "arches.families.decoder",
    "encoder": "arches.families.encoder",
    "encoder_decoder": "arches.families.encoder_decoder",
    "glm": "arches.families.glm",
}

def family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise unknown("family", name, FAMILIES)
    return importlib.import_module(FAMILIES[name]).SPEC


def plain(section: Any) -> dict:
    """A config section as a plain dict (DictConfig or dict in, dict out)."""
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]
    return dict(section or {})


def sweeps_preset(name: Any) -> str | None:
    """The preset file a config's arch came from, when there is one (to name it in errors)."""
    from arches.config import sweeps_dir

    path = sweeps_dir() / "arch" / f"{name}.yaml"
    return str(path) if name and path.exists() else None


def model_config(arch: Any, size: Any, vocab_size: int, seq_len: int | None = None) -> ModelConfig:
    """The ModelConfig of a preset at a size, checked against its family and window (and
    the preset's `arch` section against its family: `ArchConfig`)."""
    arch, size = plain(arch), plain(size)
    spec = family(arch.get("family", ""))
    values = {k: v for k, v in size.items() if k in SIZE_KEYS and v is not None}
    values.update({k: v for k, v in (arch.get("model") or {}).items() if v is not None or k in ("n_kv_heads", "d_ff")})
    if "n_kv_heads" in values and values["n_kv_heads"] is None:
        values.pop("n_kv_heads")
    if "d_ff" in values and values["d_ff"] is None:
        values.pop("d_ff")
    values["vocab_size"] = vocab_size
    try:
        cfg = ModelConfig.from_dict(values)
    except UserError as error:
        preset_file = sweeps_preset(arch.get("name"))
        raise (UserError(f"{preset_file}: {error}") if preset_file else error) from None
    if cfg.position not in spec.positions:
        raise UserError(
            f"model.position={cfg.position} means nothing for the {spec.name} family; "
            f"choose one of: {', '.join(spec.positions)}"
        )
    ArchConfig.of(arch)  # the objective and its settings, checked against the family
    if seq_len is not None:
        needed = spec.input_len(arch, seq_len)
        if cfg.max_len < needed:
            raise UserError(
                f"size.max_len={cfg.max_len} is shorter than a training window: {arch.get('name')} needs {needed} "
                f"positions for data.seq_len={seq_len}; raise size.max_len or lower data.seq_len"
            )
    return cfg

