"""Scored inside training, in the objective's own format (issue 13, fixes 1-4).

- Every scorer cuts its requests to the lengths the checkpoint trained on
  (`trained_lengths` in model.json), never to the architecture's max_len: position ids,
  GLM block ids and Part B lengths are recorded by hooks on the real embedding tables
  while loglikelihood, rolling and generation requests run, and checked.
- A checkpoint without them warns, naming the run; a continuation that does not fit
  is one clear error, or, in a blank-filling format, successive trained blanks.
- Each objective gets its format by default (span-corruption decoders the sentinel
  layout of their training rows), and a format the objective never saw is refused.
- wang2022 holds one block fixed across its six variants.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from conftest import local_corpus, tiny_text

from arches.config import compose, group_choices
from arches.data.tokenizer import Specials, train_tokenizer
from arches.errors import UserError
from arches.registry import family, model_config, plain

MAX_LEN = 128  # the architecture's table: far longer than the windows trained below
SEQ_LEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    return train_tokenizer([tiny_text(rng, 15) for _ in range(20)], 400)


def arch_of(preset: str, *overrides: str) -> dict:
    return plain(compose([f"arch={preset}", *overrides]).arch)


def build(arch: dict, tokenizer, max_len: int = MAX_LEN):
    size = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": max_len}
    cfg = model_config(arch, size, tokenizer.get_vocab_size())
    torch.manual_seed(0)
    return family(arch["family"]).build(cfg, arch).eval()


class IdsSeen:
    """The largest id each embedding table was asked for (a forward hook on the real
    nn.Embedding modules: nothing about the model is replaced)."""

    def __init__(self, model) -> None:
        self.largest: dict[str, int] = {}
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Embedding) and name.endswith(("positions", "block_positions")):
                module.register_forward_hook(self.hook(name.rsplit(".", 1)[-1]))

    def hook(self, kind: str):
        def record(module, inputs, output) -> None:
            self.largest[kind] = max(self.largest.get(kind, -1), int(inputs[0].max()))

        return record


def long_requests(rng: random.Random) -> tuple[list[tuple[str, str]], list[str]]:
    few_shot = tiny_text(rng, 14)  # ~200 tokens of context, as a 5-shot prompt
    pairs = [(few_shot, " at last."), (few_shot, " the winter sea and the burning city before the dawn"),
             ("The fool", " forgot")]  # fmt: skip
    return pairs, [tiny_text(rng, 10)]


ALL = [(preset, ()) for preset in group_choices("arch")] + [
    ("gpt", ("arch.objective=span_corruption",)),
    ("prefix_lm", ("arch.objective=span_corruption",)),
    ("t5", ("arch.objective=prefix_lm",)),
    ("glm", ("arch.gmask_ratio=0.0",)),
]


@pytest.mark.parametrize("preset,overrides", ALL, ids=[" ".join((p, *o)) for p, o in ALL])
def test_no_request_reaches_a_position_the_checkpoint_never_trained(preset, overrides, tokenizer):
    arch = arch_of(preset, *overrides)
    spec = family(arch["family"])
    trained = spec.trained_lengths(arch, SEQ_LEN)
    model = build(arch, tokenizer)
    seen = IdsSeen(model)
    scorer = spec.scorer(model, tokenizer, arch, trained=trained)
    pairs, texts = long_requests(random.Random(1))
    results = scorer.loglikelihood(pairs, 4)
    assert all(np.isfinite(lp) and lp < 0 for lp, _ in results)
    assert all(np.isfinite(lp) for lp in scorer.loglikelihood_rolling(texts, 4))
    if arch["family"] != "encoder":
        scorer.generate([pairs[0][0]], [["\n\n"]], 40)
    if "positions" in seen.largest:  # learned absolute positions (t5_relative and glm's own below)
        assert seen.largest["positions"] < trained["input"], seen.largest
    if arch["family"] == "glm":
        # Part A positions stay in the window; a [MASK] blank's block ids never pass its trained span + 1
        assert seen.largest["positions"] < trained["input"]
        assert seen.largest["block_positions"] <= trained["mask_span"], seen.largest
    assert scorer.max_len == trained["input"] < MAX_LEN


def test_glm_gmask_requests_stay_inside_the_document_level_spans(tokenizer):
    arch = arch_of("glm")
    assert arch["gmask_ratio"] > 0  # the preset trains GLM's multi-task objective
    spec = family("glm")
    trained = spec.trained_lengths(arch, SEQ_LEN)
    model = build(arch, tokenizer)
    seen = IdsSeen(model)
    scorer = spec.scorer(model, tokenizer, arch, trained=trained, format="gmask")
    pairs, texts = long_requests(random.Random(2))
    scorer.loglikelihood(pairs + [("The", " king" * 40)], 4)
    scorer.loglikelihood_rolling(texts, 4)
    scorer.generate(["The old king"], [["\n\n"]], 60)
    assert seen.largest["block_positions"] <= trained["gmask_span"]
    assert seen.largest["positions"] < trained["gmask_input"]


def test_glm_trained_lengths_are_what_its_objective_produces(tokenizer):
    """The block ids the scorer may use are ones the collate really emits, and no more."""
    specials = Specials.from_tokenizer(tokenizer)
    for gmask_ratio in (0.0, 0.5):
        arch = arch_of("glm", f"arch.gmask_ratio={gmask_ratio}")
        trained = family("glm").trained_lengths(arch, SEQ_LEN)
        collate = family("glm").collate(arch, specials, SEQ_LEN, seed=0, vocab_size=tokenizer.get_vocab_size())
        rng = np.random.default_rng(0)
        mask_blocks, gmask_blocks = [], []
        for start in range(0, 4000, 100):
            windows = [{"tokens": torch.as_tensor(rng.integers(107, 400, SEQ_LEN)), "index": start + i} for i in range(100)]
            batch = collate(windows)
            is_gmask = (batch["input_ids"] == specials.gmask).any(1)
            top = batch["block_position_ids"].max(1).values
            mask_blocks += top[~is_gmask].tolist()
            gmask_blocks += top[is_gmask].tolist()
        mask_blocks = np.array(mask_blocks)
        # the longest trained span is drawn (its block id, span + 1, occurs), and longer ones are rare
        assert (mask_blocks >= trained["mask_span"] + 1).any()
        assert (mask_blocks > trained["mask_span"] + 1).mean() < 0.01
        if gmask_ratio:
            assert abs(len(gmask_blocks) / (len(gmask_blocks) + len(mask_blocks)) - gmask_ratio) < 0.05
            assert max(gmask_blocks) == trained["gmask_span"] + 1
        else:
            assert not gmask_blocks and "gmask_span" not in trained


def test_a_continuation_longer_than_the_trained_input_is_one_clear_error(tokenizer):
    arch = arch_of("gpt")
    model = build(arch, tokenizer)
    scorer = family("decoder").scorer(model, tokenizer, arch, trained={"input": SEQ_LEN - 1})
    with pytest.raises(UserError, match=r"does not fit the 31-token input this decoder model was trained on"):
        scorer.loglikelihood([("The", " king" * 40)], 2)


# --- the format follows the objective ---

DEFAULTS = [
    ("gpt", (), "causal"),
    ("prefix_lm", (), "prefix_lm"),
    ("gpt", ("arch.objective=span_corruption",), "sentinel"),
    ("prefix_lm", ("arch.objective=span_corruption",), "sentinel"),
    ("t5", (), "t5_sentinel"),
    ("t5", ("arch.objective=prefix_lm",), "plain"),
    ("bert", (), "pll_word_l2r"),
    ("glm", (), "mask"),
]


@pytest.mark.parametrize("preset,overrides,expected", DEFAULTS)
def test_the_default_format_is_the_objective_s(preset, overrides, expected, tokenizer):
    arch = arch_of(preset, *overrides)
    assert family(arch["family"]).scorer(build(arch, tokenizer), tokenizer, arch).format == expected


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_the_sentinel_format_is_the_layout_of_a_training_row(prefix_lm, tokenizer):
    """A span-corruption decoder's training row whose one noise span ends the window is
    exactly the row the sentinel format scores for (context, that span), and the scorer's
    log-likelihood is the training forward's on it."""
    arch = arch_of("prefix_lm" if prefix_lm else "gpt", "arch.objective=span_corruption")
    specials = Specials.from_tokenizer(tokenizer)
    model = build(arch, tokenizer)
    context = tokenizer.encode("The old king walked through the silent", add_special_tokens=False).ids
    span = tokenizer.encode(" harbour at last", add_special_tokens=False).ids
    tokens = np.array(context + span)
    noise = np.zeros(len(tokens), dtype=bool)
    noise[len(context) :] = True
    from arches.families.noise import span_corrupt

    inputs, targets = span_corrupt(tokens, noise, specials.sentinels, specials.eos)
    sequence = np.concatenate([inputs, targets])
    scorer = family("decoder").scorer(model, tokenizer, arch, trained=family("decoder").trained_lengths(arch, 64))
    assert scorer.format == "sentinel"
    expected_row = sequence[: len(inputs) + 1 + len(span) - 1].tolist()  # inputs, <X>, the span but its last token
    assert expected_row == context + [specials.sentinels[0], specials.eos, specials.sentinels[0]] + span[:-1]
    # the training forward on that row: prefix = the corrupted inputs (bidirectional for ND)
    batch = {"input_ids": torch.tensor([expected_row]), "prefix_len": torch.tensor([len(inputs)])}
    with torch.no_grad():
        hidden = model.body(batch["input_ids"], mask=model.attention_mask(batch) if prefix_lm else None,
                            is_causal=not prefix_lm)  # fmt: skip
        logprobs = model.head(hidden)[0].float().log_softmax(-1)
    first = len(inputs)  # the <X> opening the targets predicts the span's first token
    want = sum(float(logprobs[first + k, token]) for k, token in enumerate(span))
    (got, _), = scorer.score_tokens([(context, span)], 1)
    assert got == pytest.approx(want, abs=1e-5)


def test_a_format_the_objective_never_saw_is_refused(tokenizer):
    gpt = arch_of("gpt")
    with pytest.raises(UserError, match="format=sentinel asks a decoder trained with arch.objective=lm"):
        family("decoder").scorer(build(gpt, tokenizer), tokenizer, gpt, format="sentinel")
    ed_plm = arch_of("t5", "arch.objective=prefix_lm")
    with pytest.raises(UserError, match="format=t5_sentinel asks an encoder_decoder trained with arch.objective=prefix_lm"):
        family("encoder_decoder").scorer(build(ed_plm, tokenizer), tokenizer, ed_plm, format="t5_sentinel")
    glm = arch_of("glm", "arch.gmask_ratio=0.0")
    with pytest.raises(UserError, match=r"format=gmask asks a GLM trained without \[gMASK\] windows"):
        family("glm").scorer(build(glm, tokenizer), tokenizer, glm, trained=family("glm").trained_lengths(glm, 32), format="gmask")


# --- through a trained run folder and lm-eval's adapter ---


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from arches.train.loop import train

    root = tmp_path_factory.mktemp("trained_lengths")
    cfg = compose([*local_corpus(root), f"results_dir={root / 'results'}", "arch=glm", "arch.gmask_ratio=0.0",
                   "size=debug", "train.micro_batch_size=4", "trainer.max_steps=2", "run_name=glm"])  # fmt: skip
    train(cfg)
    return root / "results" / "glm"


def test_training_records_its_lengths_and_the_adapter_keeps_to_them(trained_run):
    from arches.train.run_folder import read_model_file
    from harness.lm.model import ArchesLM

    meta = read_model_file(trained_run)
    assert meta["trained_lengths"] == family("glm").trained_lengths(meta["arch"], 32)
    assert meta["model"]["max_len"] == 512 > meta["trained_lengths"]["input"]
    lm = ArchesLM(run=str(trained_run), cache=False)
    assert lm.scorer.max_len == 32 and lm.scorer.continuation_room() == meta["trained_lengths"]["mask_span"]
    with pytest.raises(UserError, match=rf"{trained_run}: format=gmask asks a GLM trained without \[gMASK\]"):
        ArchesLM(run=str(trained_run), format="gmask", cache=False)


def test_a_checkpoint_without_trained_lengths_warns_naming_the_run(trained_run, tmp_path, caplog):
    import shutil

    from arches.train.run_folder import read_model_file, write_model_file
    from harness.lm.model import ArchesLM

    old = tmp_path / "old-run"
    shutil.copytree(trained_run, old)
    meta = read_model_file(old)
    del meta["trained_lengths"], meta["sha256"]
    write_model_file(old, meta)
    with caplog.at_level(logging.WARNING, logger="harness.lm.model"):
        lm = ArchesLM(run=str(old), cache=False)
    assert any(str(old) in r.getMessage() and "trained_lengths" in r.getMessage() for r in caplog.records)
    assert lm.scorer.max_len == 512  # the old behaviour, as the warning says


# --- one block across wang2022 ---


def test_wang2022_holds_one_block_and_compute_matches_the_encoder_decoder():
    from harness.compare import plan

    _, runs, _ = plan(["experiment=wang2022"])
    archs = {run.variant: plain(compose(run.overrides).arch) for run in runs}
    blocks = {name: arch["model"] for name, arch in archs.items()}
    assert len({str(sorted(b.items())) for b in blocks.values()}) == 1, blocks
    assert blocks["cd_flm"]["position"] == "t5_relative" and blocks["cd_flm"]["activation"] == "geglu"
    # what varies is architecture and objective only
    assert {(a["family"], a.get("prefix_lm", False), a["objective"]) for a in archs.values()} == {
        ("decoder", False, "lm"), ("decoder", True, "prefix_lm"), ("encoder_decoder", False, "prefix_lm"),
        ("decoder", False, "span_corruption"), ("decoder", True, "span_corruption"),
        ("encoder_decoder", False, "span_corruption"),
    }  # fmt: skip
