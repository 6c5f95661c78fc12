"""The explicit table of families, and what every caller needs from it.

Family modules are imported lazily, so `arches list` or the CLI's help never pays
for a family it does not use; a miss lists the valid names and the closest one.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arches.core import FamilySpec, ModelConfig
from arches.errors import UserError, unknown

# One line per family: name -> module exporting SPEC.
FAMILIES: dict[str, str] = {
    "decoder": "arches.decoder",
    "encoder": "arches.encoder",
    "encoder_decoder": "arches.encoder_decoder",
    "glm": "arches.glm",
}

SIZE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_len", "dropout")


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
    """The ModelConfig of a preset at a size, checked against its family and window."""
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
    objective = arch.get("objective")
    if objective not in spec.objectives:
        raise UserError(
            f"arch.objective={objective!r} is not a {spec.name} objective; choose one of: {', '.join(spec.objectives)}"
        )
    if seq_len is not None:
        needed = spec.input_len(arch, seq_len)
        if cfg.max_len < needed:
            raise UserError(
                f"size.max_len={cfg.max_len} is shorter than a training window: {arch.get('name')} needs {needed} "
                f"positions for data.seq_len={seq_len}; raise size.max_len or lower data.seq_len"
            )
    return cfg


def list_command(overrides: list[str]) -> None:
    """`arches list`: every preset with its family, knobs, parameters and FLOPs/token per size."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from arches.config import compose, group_choices
    from arches.core.stack import parameter_counts

    cfg = compose(overrides)
    vocab_size, seq_len = int(cfg.data.vocab_size), int(cfg.data.seq_len)
    table = Table(title=f"presets (vocab {vocab_size}, window {seq_len} tokens)", expand=True)
    for column in ("preset", "family", "objective", "knobs", "size", "params", "non-emb params", "FLOPs/token"):
        table.add_column(column, justify="right" if column in ("params", "non-emb params", "FLOPs/token") else "left")
    broken = []
    for preset in group_choices("arch"):
        try:  # a broken preset is listed as broken; the others still are
            arch = plain(compose([f"arch={preset}", *overrides]).arch)
            model_config(arch, plain(compose(["size=debug", *overrides]).size), vocab_size)
        except UserError as error:
            broken.append(preset)
            table.add_row(preset, "[red]broken[/red]", "", str(error), *[""] * 4)
            table.add_section()
            continue
        knobs = " ".join(f"{k}={v}" for k, v in (arch.get("model") or {}).items())
        order = ["debug", "tiny", "small", "base"]  # smallest first; other sizes after, by name
        sizes = sorted(group_choices("size"), key=lambda name: (order.index(name) if name in order else len(order), name))
        for size_name in sizes:
            size = plain(compose([f"size={size_name}", *overrides]).size)
            model_cfg = model_config(arch, size, vocab_size)
            with torch.device("meta"):  # count without allocating
                model = family(arch["family"]).build(model_cfg, arch)
            counts = parameter_counts(model)
            flops = family(arch["family"]).flops_per_token(model_cfg, arch, seq_len)
            table.add_row(
                preset, arch["family"], arch.get("objective", ""), knobs if size_name == "debug" else "", size_name,
                f"{counts['total'] / 1e6:.2f}M", f"{counts['non_embedding'] / 1e6:.2f}M", f"{flops / 1e6:.1f}M",
            )
        table.add_section()
    Console().print(table)
    if broken:
        import sys

        print(f"arches list: {len(broken)} preset(s) could not be read: {', '.join(broken)} (see the table)", file=sys.stderr)
