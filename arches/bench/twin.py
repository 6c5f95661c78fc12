"""The transformers twin: the transformers model that computes what ours does, with our
weights (arches.interop's export mapping), and our batch in its keyword arguments. The
facts per family come from its FamilySpec (`hf_batch`, `hf_config_ids`)."""

from __future__ import annotations

import torch
from torch import nn

from arches import interop, registry
from arches.data.tokenizer import Specials
from arches.errors import UserError


def transformers_missing() -> str | None:
    """None when transformers imports; else the one-line note the table shows."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed: the HF column is skipped (pip install 'arches[bench]')"
    return None


def has_twin(preset: str, arch: dict) -> bool:
    """Whether arches.interop maps this preset onto a transformers class and its family
    has a twin batch (FamilySpec.hf_batch); prefix-LM decoders and document masks have none."""
    architecture = interop.BY_PRESET.get(preset)
    return (
        architecture is not None and architecture.family == arch.get("family")
        and registry.family(architecture.family).hf_batch is not None
        and not arch.get("prefix_lm") and not arch.get("document_mask")
    )  # fmt: skip


def transformers_twin(preset: str, arch: dict, model: nn.Module, specials: Specials) -> tuple[nn.Module | None, str]:
    """The transformers model that computes what `model` does, with its weights
    (arches.interop's export mapping): (model, class name), or (None, why not)."""
    if not has_twin(preset, arch):
        return None, f"no transformers equivalent of {preset}"
    architecture = interop.BY_PRESET[preset]
    import transformers  # optional (arches[bench]): imported only where a twin is built

    transformers.logging.set_verbosity_error()
    try:
        values = architecture.hf_config(model.cfg)
    except UserError as error:
        return None, f"{architecture.hf_class} cannot express this {preset}: {error}"
    values.update(pad_token_id=specials.pad, bos_token_id=specials.bos, eos_token_id=specials.eos)
    values.update(registry.family(architecture.family).hf_config_ids(specials))
    config = transformers.AutoConfig.for_model(architecture.model_type, **values)
    twin = getattr(transformers, architecture.auto_class).from_config(config)
    weights = interop.export_weights(model, architecture, config, model.cfg)
    missing, unexpected = twin.load_state_dict(weights, strict=False)
    tied = set(getattr(twin, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"arches.interop's {architecture.hf_class} mapping is incomplete: {sorted(set(missing) - tied)}")
    twin.tie_weights()
    return twin, architecture.hf_class


def transformers_batch(family: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our batch in transformers' keyword arguments, predicting the same targets (FamilySpec.hf_batch)."""
    hf_batch = registry.family(family).hf_batch
    if hf_batch is None:
        raise UserError(f"no transformers batch for the {family} family")
    return hf_batch(batch)
