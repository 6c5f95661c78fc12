"""Reading a transformers checkpoint: the folder (local, or downloaded from the Hub), its
architecture, its weights, and its tokenizer (or the one `tokenizer=<path>` names)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from arches import hub
from arches.errors import UserError, first_line
from arches.interop.mapping import Architecture
from arches.interop.table import ARCHITECTURES, BY_MODEL_TYPE, supported

# LayerNorm parameters in checkpoints written before transformers renamed them (BERT's gamma and beta)
LEGACY_NAMES = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))
TOKENIZER_FILES = "tokenizer.json, vocab.json + merges.txt, vocab.txt or a SentencePiece *.model"
TOKENIZER_HINT = "pass tokenizer=<path to tokenizer.json or a folder with one>"


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_source(source: str) -> Path:
    """A local checkpoint folder as it is, or a Hub name downloaded (config, tokenizer, weights)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{source} is a file; pass the checkpoint's folder (with config.json and the weights)")
        return path
    if not HUB_NAME.match(source):
        raise UserError(f"{source} does not exist; pass a checkpoint folder or a Hugging Face Hub model name")
    why = hub.unreachable()
    if why:
        raise UserError(f"'{source}' is not a local folder and {why}; pass a local folder saved with save_pretrained")
    from huggingface_hub import snapshot_download

    try:
        # the top-level config, tokenizer and weights only (repos also hold ONNX, Flax, TF copies)
        common = ["*config.json", "tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model"]
        folder = Path(snapshot_download(source, allow_patterns=[*common, "model*.safetensors", "model.safetensors.index.json"]))
        if not any(folder.glob("model*.safetensors")):
            folder = Path(snapshot_download(source, allow_patterns=[*common, "pytorch_model*.bin", "pytorch_model.bin.index.json"]))
    except Exception as error:  # huggingface_hub's errors (not found, gated, network) say what happened
        first = first_line(error)
        raise UserError(f"could not fetch '{source}' from the Hugging Face Hub ({first}); pass a local folder instead") from None
    return folder


def architecture_of(folder: Path) -> Architecture:
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no config.json; is it a transformers checkpoint folder?") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if not raw.get("architectures") and raw.get("model_type") in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[raw["model_type"]]
    name = (raw.get("architectures") or [f"model_type={raw.get('model_type')}"])[0]
    if name not in ARCHITECTURES:
        raise UserError(f"unsupported architecture {name}; arches import-hf supports: {supported()}")
    return ARCHITECTURES[name]



def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers checkpoint folder (safetensors or PyTorch, one file or sharded)."""
    from safetensors.torch import load_file

    for single, index, safe in (("model.safetensors", "model.safetensors.index.json", True),
                                ("pytorch_model.bin", "pytorch_model.bin.index.json", False)):
        if (folder / single).is_file():
            files = [folder / single]
        elif (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text()).get("weight_map", {})
            files = [folder / name for name in sorted(set(weight_map.values()))]
        else:
            continue
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            if not file.is_file():
                raise UserError(f"{file} is missing (listed in {folder / index}); download the whole checkpoint")
            try:
                tensors.update(load_file(str(file)) if safe else torch.load(file, map_location="cpu", weights_only=True))
            except Exception as error:  # safetensors and torch raise several kinds
                raise UserError(f"{file} cannot be read ({first_line(error)})") from None
        return tensors
    raise UserError(f"{folder} has no weights (model.safetensors or pytorch_model.bin); save the model there with save_pretrained")


def rename_legacy(tensors: dict[str, torch.Tensor], architecture: Architecture) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in tensors.items():
        for pattern, replacement in (*LEGACY_NAMES, *architecture.legacy_names):
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed




# --------------------------------------------------------------------------- the tokenizer


def has_tokenizer(folder: Path) -> bool:
    """Whether a folder holds tokenizer files. transformers builds some tokenizers (GPT-2's)
    from no files at all, with an empty vocabulary, so this is asked before it is."""
    return (
        (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        or (folder / "vocab.txt").is_file()
        or any(folder.glob("*.model"))
    )


def load_hf_tokenizer(folder: Path, tokenizer: str | None, vocab_size: int) -> Any:
    """The model's fast tokenizer: the one `tokenizer` names (a tokenizer.json, or a folder
    transformers loads one from) or else the checkpoint folder's; its vocabulary must fit
    the model's `vocab_size` embedding rows."""
    import transformers

    if tokenizer is None:
        source = folder
        if not has_tokenizer(folder):
            raise UserError(f"{folder} has no tokenizer ({TOKENIZER_FILES}); {TOKENIZER_HINT}")
    else:
        source = Path(tokenizer).expanduser()
        if not source.exists():
            raise UserError(f"tokenizer={tokenizer} does not exist; {TOKENIZER_HINT}")
        if source.is_dir() and not has_tokenizer(source):
            raise UserError(f"tokenizer={tokenizer} has no tokenizer ({TOKENIZER_FILES}); {TOKENIZER_HINT}")
    try:
        if source.is_file():  # a tokenizers JSON file: its special tokens come from the model's config
            hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(source))
        else:
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    except Exception as error:  # transformers and tokenizers raise many kinds
        first = first_line(error)
        raise UserError(f"{source} has no usable tokenizer ({first}); {TOKENIZER_HINT}") from None
    if not getattr(hf_tokenizer, "is_fast", False):
        raise UserError(f"the tokenizer in {source} is not a fast (tokenizers) one; arches needs its tokenizer.json")
    backend = hf_tokenizer.backend_tokenizer
    if backend.get_vocab_size(with_added_tokens=False) == 0:
        raise UserError(f"the tokenizer in {source} has an empty vocabulary; {TOKENIZER_HINT}")
    if backend.get_vocab_size() > vocab_size:
        raise UserError(
            f"the tokenizer in {source} has {backend.get_vocab_size()} tokens but the model only {vocab_size} embedding rows; "
            "pass the tokenizer the model was trained with (tokenizer=<path>)"
        )
    backend.no_truncation()  # scoring truncates by itself, from the left
    backend.no_padding()
    return hf_tokenizer
