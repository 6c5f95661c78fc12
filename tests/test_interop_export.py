"""`arches export-hf` of runs trained by this harness, and the README's import/export table.

Runs are built from the presets' own YAML (tiny sizes, random weights spread wider than
the init, norms and biases included, so every tensor moves the logits) and written as
run folders; the exported folder is loaded with `from_pretrained` and its logits
compared with ours at fp32. Checks: GPT-J (two different norms folded into its one,
partial interleaved rotary), Falcon (multi-query parallel, and sequential), a gptj run
with attention biases refused with the way out (`--as GPTNeoXForCausalLM`) which then
works, prefix_lm and glm refused with the reason, `--as` mistakes, and the README table
against arches.interop's tables.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import composed, tiny_text  # noqa: E402
from hf_checkpoints import TOLERANCE, run_cli  # noqa: E402

from arches.config import group_choices  # noqa: E402
from arches.core import ModelConfig  # noqa: E402
from arches.interop import ARCHITECTURES, BY_PRESET, NO_EQUIVALENT, export_hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 400
SIZE = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_len=64)


@pytest.fixture(scope="module")
def tokenizer():
    from arches.data.tokenizer import train_tokenizer

    return train_tokenizer([tiny_text(random.Random(1), 30)], VOCAB)


def arches_run(folder: Path, preset: str, tokenizer, change=None, **knobs) -> tuple[torch.nn.Module, Path]:
    """A completed run folder of `preset` (its YAML's knobs, `knobs` on top) with random weights,
    `change(model)` applied before it is saved."""
    from arches.registry import family
    from arches.data.tokenizer import tokenizer_hash
    from arches.train.record import update_record
    from arches.train.run_folder import TOKENIZER_FILE, save_checkpoint

    arch = composed(preset)[0]
    cfg = ModelConfig(**SIZE, **{**arch.pop("model"), **knobs})
    torch.manual_seed(0)
    model = family(arch["family"]).build(cfg, arch).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0, 0.2) if "norm" in name and name.endswith("weight") else parameter.normal_(0.0, 0.2)
        if change is not None:
            change(model)
    save_checkpoint(folder, model, arch["family"], arch, cfg)
    tokenizer.save(str(folder / TOKENIZER_FILE))
    update_record(folder, tokenizer_hash=tokenizer_hash(tokenizer), status="completed")
    return model, folder


def same_logits(model: torch.nn.Module, exported: Path, hf_class: str) -> None:
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    assert type(reloaded).__name__ == hf_class
    batch = {"input_ids": torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))}
    with torch.no_grad():
        ours, theirs = model(batch)[0], reloaded(input_ids=batch["input_ids"]).logits
    assert (ours - theirs).abs().max().item() <= TOLERANCE, (ours - theirs).abs().max().item()
    assert ours.abs().max().item() > 0.5  # not a comparison of near-zero logits


@pytest.mark.parametrize("preset,knobs,hf_class", [
    # two different norms per block folded into GPT-J's one; 2 of 8 head dims rotated, in GPT-J's interleaved pairs
    ("gptj", {"bias": False, "rotary_pct": 0.25}, "GPTJForCausalLM"),
    ("falcon", {}, "FalconForCausalLM"),  # the preset: multi-query, parallel, no biases (Falcon's LayerNorm biases are zeros)
    ("falcon", {"parallel_block": False, "n_kv_heads": None, "bias": True}, "FalconForCausalLM"),  # sequential, all heads
])
def test_an_arches_run_exports_with_the_same_logits(preset, knobs, hf_class, tokenizer, tmp_path):
    model, run = arches_run(tmp_path / "run", preset, tokenizer, **knobs)
    if preset == "gptj":
        block = model.body.blocks[0]
        assert not torch.equal(block.attn_norm.weight, block.mlp_norm.weight)  # the fold has work to do
    same_logits(model, export_hf(run, tmp_path / "out"), hf_class)


def gptj_biases_it_can_hold(model: torch.nn.Module) -> None:
    """One norm's worth of parameters per block, and no query or key bias: the value and
    output biases are left, which GPT-J holds in its MLP's output bias."""
    for block in model.body.blocks:
        block.mlp_norm.load_state_dict(block.attn_norm.state_dict())
        block.attn.q_proj.bias.zero_()
        block.attn.kv_proj.bias[: block.attn.kv_proj.bias.shape[0] // 2].zero_()


def test_a_gptj_run_with_value_and_output_biases_exports_to_gptj(tokenizer, tmp_path):
    model, run = arches_run(tmp_path / "run", "gptj", tokenizer, change=gptj_biases_it_can_hold)
    assert model.body.blocks[0].attn.out_proj.bias.abs().max() > 0.1
    same_logits(model, export_hf(run, tmp_path / "out"), "GPTJForCausalLM")


def test_a_gptj_run_with_attention_biases_is_refused_and_exports_as_neox(tokenizer, tmp_path, capsys):
    model, run = arches_run(tmp_path / "run", "gptj", tokenizer)  # the preset: bias=true
    out = tmp_path / "out"
    code, err = run_cli(["export-hf", str(run), str(out)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "body.blocks.0.attn.q_proj.bias is nonzero" in err and "--as GPTNeoXForCausalLM" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing half-written
    code, err = run_cli(["export-hf", str(run), str(out), "--as", "GPTNeoXForCausalLM"], capsys)
    assert code == 0, err
    same_logits(model, out, "GPTNeoXForCausalLM")


@pytest.mark.parametrize("preset,reason", [
    ("prefix_lm", "no decoder with bidirectional attention over a prefix"),
    ("glm", "no GLM blank-infilling model"),
])
def test_a_preset_without_a_transformers_class_is_refused_with_the_reason(preset, reason, tokenizer, tmp_path, capsys):
    _, run = arches_run(tmp_path / "run", preset, tokenizer)
    code, err = run_cli(["export-hf", str(run), str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert reason in err and "export-hf supports the presets" in err and "falcon" in err and "gptj" in err
    assert not (tmp_path / "out").exists()


def test_export_as_names_the_classes_and_checks_the_run(tokenizer, tmp_path, capsys):
    _, run = arches_run(tmp_path / "run", "llama", tokenizer, n_kv_heads=2)
    out = str(tmp_path / "out")
    for argv, needle in (
        (["--as", "LlamaForCausalLm"], "Did you mean 'LlamaForCausalLM'?"),
        (["--as", "BertForMaskedLM"], "is a decoder run; BertForMaskedLM takes encoder runs"),
        (["--as=GPT2LMHeadModel"], "unsupported config option position='rope': GPT-2 always has position='learned'"),
        (["--as"], "--as needs a transformers class"),
        (["--colour"], "unknown option --colour"),
    ):
        code, err = run_cli(["export-hf", str(run), out, *argv], capsys)
        assert code == 2 and err.count("\n") == 1 and needle in err, (argv, err)
    assert not Path(out).exists()


# --------------------------------------------------------------------------- the README table


def readme_table() -> dict[str, list[str]]:
    """preset -> its row's cells after the first, from the README's "Import and export" table."""
    section = (ROOT / "README.md").read_text().split("\n## Import and export\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_readme_table_says_what_the_code_does():
    rows = readme_table()
    assert sorted(rows) == sorted(group_choices("arch")), "one row per preset in sweeps/arch/"
    assert sorted([*BY_PRESET, *NO_EQUIVALENT]) == sorted(group_choices("arch")), "each preset: a class or a reason, not both"
    assert len(BY_PRESET) == len(ARCHITECTURES), "each transformers class is one preset's"
    for preset, (export, imports, notes) in rows.items():
        if preset in BY_PRESET:
            assert export == f"`{BY_PRESET[preset].hf_class}`", preset
        else:
            assert export == "none" and preset in NO_EQUIVALENT and notes, preset
        assert imports == ("yes" if any(a.preset == preset for a in ARCHITECTURES.values()) else "no"), preset
