"""`arches import-hf` and `arches export-hf`: a transformers checkpoint as a run folder, and back."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from arches.core import ModelConfig
from arches.core.config import SIZE_KEYS
from arches.errors import UserError, first_line, unknown
from arches.interop.checkpoint import architecture_of, load_hf_tokenizer, read_checkpoint, rename_legacy, resolve_source
from arches.interop.mapping import Architecture, export_weights, import_weights
from arches.interop.table import ARCHITECTURES, BY_PRESET, NO_EQUIVALENT, exportable
from arches.registry import family

def special_tokens(architecture: Architecture, tokenizer: Any, config: Any) -> dict:
    """The imported tokenizer's tokens for arches' special roles (see `Specials`), as its
    family reads them (FamilySpec.import_specials) and with the roles its scoring needs."""
    spec = family(architecture.family)
    names = spec.import_specials(tokenizer, config)
    for role in spec.required_specials:
        if names[role] is None:
            raise UserError(
                f"the model's tokenizer has no {role} token (nor does config.json name one of its tokens), which arches' "
                f"{architecture.family} scoring needs; pass tokenizer=<a folder whose tokenizer_config.json names it>"
            )
    return names


# --------------------------------------------------------------------------- import


def _replace_folder(built: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)  # a re-import of the same name starts over, as a re-run of `arches train` does
    os.replace(built, final)


def import_hf(source: str, preset: str | None = None, overrides: list[str] | None = None, tokenizer: str | None = None) -> Path:
    """A transformers checkpoint (folder or Hub name) -> a completed run folder; returns its path.
    `overrides` are Hydra overrides for the recorded config (results_dir=, run_name=);
    `tokenizer` a tokenizer.json or a folder with one, for a checkpoint saved without its own."""
    from arches.config import compose, group_choices, to_container
    from arches.core.stack import parameter_counts
    from arches.registry import family, plain
    from arches.data.tokenizer import tokenizer_hash
    from arches.train.record import update_record
    from arches.train.run_folder import TOKENIZER_FILE, save_checkpoint, write_config

    folder = resolve_source(source)
    architecture = architecture_of(folder)
    preset = preset or architecture.preset
    if preset not in group_choices("arch"):
        raise unknown("preset", preset, group_choices("arch"))
    cfg = compose([f"arch={preset}", *(overrides or [])])
    arch = plain(cfg.arch)
    if arch.get("family") != architecture.family:
        raise UserError(
            f"--preset {preset} is a {arch.get('family')} preset, but {architecture.hf_class} is a {architecture.family}; "
            f"use a {architecture.family} preset such as {architecture.preset}"
        )
    try:
        import transformers
    except ImportError:
        raise UserError("import-hf needs transformers: pip install 'arches[interop]'") from None

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
    except Exception as error:
        raise UserError(f"{folder / 'config.json'} cannot be read by transformers ({first_line(error)})") from None
    knobs = architecture.knobs(config)
    model_cfg = ModelConfig.from_dict(knobs)
    hf_tokenizer = load_hf_tokenizer(folder, tokenizer, model_cfg.vocab_size)
    backend = hf_tokenizer.backend_tokenizer

    arch["model"] = {k: v for k, v in model_cfg.to_dict().items() if k not in SIZE_KEYS and k != "vocab_size"}
    arch["special_tokens"] = special_tokens(architecture, hf_tokenizer, config)
    arch["hf_architecture"] = architecture.hf_class
    model = family(architecture.family).build(model_cfg, arch)
    import_weights(model, architecture, config, model_cfg, rename_legacy(read_checkpoint(folder), architecture))
    model.eval()

    name = str(cfg.get("run_name") or f"hf-{Path(source.rstrip('/')).name}")
    results = Path(str(cfg.results_dir))
    results.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=results, prefix=f".{name}.importing-"))
    try:
        # an imported model was trained on its own context, max_len (its n_positions)
        save_checkpoint(build, model, architecture.family, arch, model_cfg, {"input": model_cfg.max_len})
        (build / TOKENIZER_FILE).write_text(backend.to_str(pretty=True))
        resolved = to_container(cfg)
        resolved.update(arch=arch, run_name=name, size={"name": "imported", **{k: getattr(model_cfg, k) for k in SIZE_KEYS}})
        write_config(build, resolved)
        counts = parameter_counts(model)
        update_record(
            build, status="completed", error=None, run_name=name, run_dir=str(results / name), experiment=None,
            variant=name, family=architecture.family, preset=preset, objective=arch.get("objective"), size="imported",
            seed=None, data=None, imported_from=source, tokenizer_from=str(tokenizer or folder),
            hf_architecture=architecture.hf_class,
            tokenizer_kind="hf", tokenizer_hash=tokenizer_hash(build / TOKENIZER_FILE), vocab_size=model_cfg.vocab_size,
            params_total=counts["total"], params_non_embedding=counts["non_embedding"], knobs=arch["model"],
        )
        _replace_folder(build, results / name)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return results / name


# --------------------------------------------------------------------------- export


def export_target(run_dir: Path, meta: dict, hf_class: str | None) -> Architecture:
    """The transformers class a run is written as: `hf_class` if given, else the one it was
    imported from, else its preset's; one line saying why when there is none."""
    arch, preset, run_family = meta["arch"], meta["arch"].get("name"), meta["family"]
    if arch.get("prefix_lm"):  # any decoder preset trained with a bidirectional prefix
        raise UserError(f"{run_dir} is a non-causal prefix-LM decoder: {NO_EQUIVALENT['prefix_lm']}; "
                        f"export-hf supports the presets {exportable()}")
    if hf_class is not None:
        if hf_class not in ARCHITECTURES:
            raise unknown("transformers class for --as", hf_class, ARCHITECTURES)
        architecture = ARCHITECTURES[hf_class]
    else:
        architecture = ARCHITECTURES.get(arch.get("hf_architecture", "")) or BY_PRESET.get(preset)
    if architecture is None:
        reason = NO_EQUIVALENT.get(preset) or family(run_family).no_transformers
        why = f": {reason}" if reason else "; --as <transformers class> tries a class for a run of another preset"
        raise UserError(f"export-hf supports the presets {exportable()}; {run_dir} is a '{preset}' run{why}")
    if architecture.family != run_family:
        raise UserError(f"{run_dir} is a {run_family} run; {architecture.hf_class} takes {architecture.family} runs")
    return architecture


def export_hf(run_dir: str | Path, out_dir: str | Path, hf_class: str | None = None) -> Path:
    """A run folder -> a transformers checkpoint folder (config, safetensors, tokenizer);
    `hf_class` (e.g. GPTNeoXForCausalLM) instead of the preset's class."""
    from arches.data.tokenizer import Specials, load_tokenizer
    from arches.train.run_folder import TOKENIZER_FILE, load_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists and is not an empty folder; choose a new output folder")
    model, meta = load_model(run_dir)
    arch, model_cfg = meta["arch"], model.cfg
    architecture = export_target(run_dir, meta, hf_class)
    try:
        import transformers
    except ImportError:
        raise UserError("export-hf needs transformers: pip install 'arches[interop]'") from None

    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    specials = Specials.from_tokenizer(tokenizer, arch.get("special_tokens"))
    values = architecture.hf_config(model_cfg)
    values.update(bos_token_id=specials.bos, eos_token_id=specials.eos, pad_token_id=specials.pad)
    values.update(family(architecture.family).hf_config_ids(specials))
    config = transformers.AutoConfig.for_model(architecture.model_type, **values)
    config.architectures = [architecture.hf_class]
    weights = export_weights(model, architecture, config, model_cfg)

    hf_model = getattr(transformers, architecture.auto_class).from_config(config)
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    tied = set(getattr(hf_model, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"arches.interop export mapping is incomplete: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
    hf_model.tie_weights()

    names = {role: tokenizer.id_to_token(getattr(specials, role)) for role in ("bos", "eos", "pad")}
    if specials.mask is not None:
        names["mask"] = tokenizer.id_to_token(specials.mask)
    sentinels = [tokenizer.id_to_token(s) for s in specials.sentinels]
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=names["bos"], eos_token=names["eos"], pad_token=names["pad"],
        mask_token=names.get("mask"), **({"additional_special_tokens": sentinels} if sentinels else {}),
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.exporting-"))
    try:
        hf_model.save_pretrained(str(build))
        fast.save_pretrained(str(build))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------- CLI entry points

IMPORT_USAGE = (
    "usage: arches import-hf <model folder or hub name> [--preset P] [tokenizer=<tokenizer.json or folder>] "
    "[results_dir=...] [run_name=...]"
)
EXPORT_USAGE = "usage: arches export-hf <run folder> <out folder> [--as <transformers class>]"


def import_command(argv: list[str]) -> None:
    source, preset, tokenizer, overrides = None, None, None, []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--preset":
            if not args:
                raise UserError(f"--preset needs a value; {IMPORT_USAGE}")
            preset = args.pop(0)
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; {IMPORT_USAGE}")
        elif arg.startswith("tokenizer="):  # not a config key: the tokenizer of this one import
            tokenizer = arg.split("=", 1)[1]
            if not tokenizer:
                raise UserError(f"tokenizer= needs a path; {IMPORT_USAGE}")
        elif "=" in arg:
            overrides.append(arg)
        elif source is None:
            source = arg
        else:
            raise UserError(f"one model at a time ({source!r} and {arg!r}); {IMPORT_USAGE}")
    if source is None:
        raise UserError(f"which model? {IMPORT_USAGE}")
    print(import_hf(source, preset, overrides, tokenizer))


def export_command(argv: list[str]) -> None:
    paths, hf_class, args = [], None, list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--as":
            if not args:
                raise UserError(f"--as needs a transformers class; {EXPORT_USAGE}")
            hf_class = args.pop(0)
        elif arg.startswith("--as="):
            hf_class = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; {EXPORT_USAGE}")
        else:
            paths.append(arg)
    if len(paths) != 2:
        raise UserError(EXPORT_USAGE)
    print(export_hf(paths[0], paths[1], hf_class))
