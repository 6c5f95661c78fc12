"""Tiny transformers checkpoints for the interop tests: random weights from small configs
and byte-level BPE tokenizers trained on the spot (nothing is downloaded), and the CLI
refusal check the interop tests share."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_text

from arches.cli import main

TOLERANCE = 1e-4
VOCAB = 384  # model embeddings; the tokenizers below have fewer tokens
D_MODEL, LAYERS, HEADS = 32, 2, 4


# --------------------------------------------------------------------------- tiny HF checkpoints


def hf_tokenizer(kind: str):
    """A byte-level BPE as a PreTrainedTokenizerFast with the special tokens the
    architecture's own tokenizer has (and T5's and BERT's post-processors)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = {
        "decoder": ["<|endoftext|>"],
        "t5": ["<pad>", "</s>", "<unk>", *(f"<extra_id_{i}>" for i in range(8))],
        "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    }[kind]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=340, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    rng = random.Random(0)
    backend.train_from_iterator([tiny_text(rng, 20) for _ in range(20)], trainer=trainer)
    if kind == "t5":  # T5's tokenizer ends every text with </s>
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", backend.token_to_id("</s>"))])
        return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                                    additional_special_tokens=specials[3:])
    if kind == "bert":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[(t, backend.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
        return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                                    sep_token="[SEP]", mask_token="[MASK]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def hf_config(name: str, **overrides):
    t = transformers
    configs = {
        "gpt2": lambda: t.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=D_MODEL, n_layer=LAYERS, n_head=HEADS,
                                     bos_token_id=0, eos_token_id=0),
        "opt": lambda: t.OPTConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, ffn_dim=64,
                                   num_attention_heads=HEADS, max_position_embeddings=128, word_embed_proj_dim=D_MODEL),
        "neox": lambda: t.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                        intermediate_size=64, max_position_embeddings=128, rotary_pct=0.5, rotary_emb_base=5000.0,
                                        use_parallel_residual=True),
        "bloom": lambda: t.BloomConfig(vocab_size=VOCAB, hidden_size=D_MODEL, n_layer=LAYERS, n_head=HEADS),
        "llama": lambda: t.LlamaConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                       num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128, rope_theta=500.0),
        "bert": lambda: t.BertConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                     intermediate_size=64, max_position_embeddings=128),
        "t5": lambda: t.T5Config(vocab_size=VOCAB, d_model=D_MODEL, d_kv=D_MODEL // HEADS, d_ff=64, num_layers=LAYERS, num_heads=HEADS,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0),
        # GPT-J rotating 4 of its 8 head dims (interleaved pairs), untied, with an output bias
        "gptj": lambda: t.GPTJConfig(vocab_size=VOCAB, n_positions=128, n_embd=D_MODEL, n_layer=LAYERS, n_head=HEADS, rotary_dim=4,
                                     n_inner=64, bos_token_id=0, eos_token_id=0),
        # Falcon-40B's block (two norms, grouped key/value heads) and Falcon-7B's (multi-query, one norm)
        "falcon": lambda: t.FalconConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                         new_decoder_architecture=True, num_kv_heads=2, ffn_hidden_size=48, max_position_embeddings=128,
                                         rope_parameters={"rope_type": "default", "rope_theta": 700.0}, bos_token_id=0, eos_token_id=0),
        "falcon7b": lambda: t.FalconConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                           multi_query=True, parallel_attn=True, max_position_embeddings=128, bos_token_id=0,
                                           eos_token_id=0),
    }
    config = configs[name]()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "opt": "OPTForCausalLM", "neox": "GPTNeoXForCausalLM", "bloom": "BloomForCausalLM",
              "llama": "LlamaForCausalLM", "bert": "BertForMaskedLM", "t5": "T5ForConditionalGeneration", "gptj": "GPTJForCausalLM",
              "falcon": "FalconForCausalLM", "falcon7b": "FalconForCausalLM"}
TOKENIZER_KIND = {"bert": "bert", "t5": "t5"}
PRESETS = {"gpt2": "gpt", "opt": "opt", "neox": "neox", "bloom": "bloom", "llama": "llama", "bert": "bert", "t5": "t5", "gptj": "gptj",
           "falcon": "falcon", "falcon7b": "falcon"}


def save_hf(folder: Path, name: str, seed: int = 0, tokenizer: bool = True, **overrides):
    """A tiny random HF model of this architecture (weights spread wider than HF's
    init, norms and biases included, so every tensor moves the logits) and its tokenizer."""
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASSES[name])(hf_config(name, **overrides)).eval()
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if parameter.dim() == 1 and ("norm" in key.lower() or "ln_" in key) and key.endswith("weight"):
                parameter.normal_(1.0, 0.2)
            else:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    if tokenizer:
        hf_tokenizer(TOKENIZER_KIND.get(name, "decoder")).save_pretrained(folder)
    return model


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, VOCAB, (2, 11), generator=generator),
            "decoder_input_ids": torch.randint(0, VOCAB, (2, 7), generator=generator)}


def hf_logits(model, name: str, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        if name == "t5":
            return model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits
        return model(input_ids=batch["input_ids"]).logits


def our_logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(batch)[0]


# --------------------------------------------------------------------------- bad input: one line, exit 2, no run folder


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()  # what came before (transformers' progress bars)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def expect_refusal(argv: list[str], results: Path, capsys, *needles: str) -> None:
    code, err = run_cli([*argv, f"results_dir={results}"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("arches: error: "), err
    for needle in needles:
        assert needle in err, err
    assert not results.exists() or not any(results.iterdir())  # no run folder, not even a half-built one
