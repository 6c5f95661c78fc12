"""A fifth family is one file, one registry line and one preset YAML (issue 17, item 1).

This module IS the fifth family's file: a small causal decoder with its own collate (next-token
prediction on each window's last `tail` tokens only, cut at a random point per window) and its own
scorer, built from the core Transformer and the scoring helpers every family shares. The test
registers it the way a new family is registered, with nothing else edited:

- one registry line: `arches.registry.FAMILIES["fifth"]` names this module;
- one preset YAML: a copy of the `sweeps` config tree with `arch/fifth.yaml` added, which the
  `sweeps` package resolves to for the test (the tree a new preset is dropped into);

and then runs it through the real workflows on a CPU: `train()` with a Lightning Trainer, `arches
eval` (lm-eval's simple_evaluate) on a bundled task, `arches bench --quick` (no transformers twin:
it is compared with the reference decoder) and `arches report` on its run folder.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import local_corpus
from torch import nn

from arches import registry
from arches.core import LMHead, ModelConfig, Transformer
from arches.core.flops import TRAINING_MULTIPLIER, head_flops, stack_forward_flops
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.errors import UserError
from arches.families.noise import batch_rng
from arches.families.objective import ArchConfig
from arches.families.scoring import (
    BaseScorer,
    GreedyStops,
    TokenPair,
    check_options,
    choose_format,
    pad_rows,
    score_positions,
    sum_by_request,
)
from arches.families.spec import FamilySpec
from arches.data.tokenizer import Specials

NAME = "fifth"
OBJECTIVES = ("tail_lm",)
FORMATS = {"causal": "left to right"}
PRESET = f"""# The fifth family's preset (tests/test_fifth_family.py).
name: {NAME}
family: {NAME}
objective: tail_lm
tail: 0.5  # the share of each window whose next tokens are predicted
model:
  position: learned
  activation: gelu
  norm: layernorm
  tie_embeddings: true
"""


# --------------------------------------------------------------------------- the family's file


class TailLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg)
        self.head = LMHead(cfg, self.body.embed)
        init_weights(self, cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        hidden = self.body(batch["input_ids"], is_causal=True)
        if "labels" not in batch:
            return self.head(hidden), None
        return self.head.logits_and_loss(hidden, batch["labels"], labelled_only=True)


@dataclass(frozen=True)
class TailArch(ArchConfig):
    """The family's own `arch` key, beside the ones every preset may set."""

    tail: float = 0.5  # the share of each window whose next tokens are predicted


def check_arch(settings: TailArch) -> None:
    if not 0 < settings.tail <= 1:
        raise UserError(f"arch.tail={settings.tail!r} must be in (0, 1]")


def build(cfg: ModelConfig, arch: dict) -> TailLM:
    TailArch.of(arch)  # checked before a model is built
    return TailLM(cfg)


def collate(arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None) -> Callable:
    """Next-token prediction on the tokens after a random cut in each window's last `tail` share."""
    tail = TailArch.of(arch).tail
    stream = np.random.default_rng(seed)

    def tail_lm(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        tokens = torch.stack([w["tokens"] for w in windows])  # (B, T)
        inputs, labels = tokens[:, :-1], tokens[:, 1:].clone()
        length = inputs.shape[1]
        first = max(1, int(length * (1 - tail)))
        cut = torch.as_tensor(rng.integers(first, length, size=len(windows)))
        labels[torch.arange(length)[None, :] < cut[:, None]] = IGNORE_INDEX
        return {"input_ids": inputs, "labels": labels}

    return tail_lm


def input_len(arch: dict, seq_len: int) -> int:
    return seq_len - 1


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    labelled = (seq_len - 1) * TailArch.of(arch).tail / 2  # about half the tail, on average
    return TRAINING_MULTIPLIER * (stack_forward_flops(cfg, seq_len - 1) + labelled * head_flops(cfg)) / seq_len


class TailScorer(BaseScorer):
    """log P(continuation | context), left to right, one forward per right-padded batch."""

    family = NAME

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        rows, owners, positions, targets = [], [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.max_len)
            ids = context[-(self.max_len + 1 - len(continuation)) :] + continuation
            rows.append(ids[:-1])
            for offset, token in enumerate(continuation):  # input position p predicts token p + 1
                owners.append(index)
                positions.append(len(ids) - len(continuation) - 1 + offset)
                targets.append(token)
        tokens, _ = pad_rows(rows, self.specials.pad, self.device)
        hidden = self.model.body(tokens, is_causal=True)
        logprobs, greedy = score_positions(self.model.head, hidden, owners, positions, targets)
        return sum_by_request(owners, logprobs, greedy, len(requests))

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy, one whole forward per token (no cache: the family is small)."""
        max_tokens = max(0, min(max_tokens, self.max_len - 1))
        stops = GreedyStops(self.tokenizer, until, {self.specials.eos}, max_tokens)
        rows = [self.generation_context(c, self.max_len - max_tokens) for c in contexts]
        while not all(stops.done):
            tokens, _ = pad_rows(rows, self.specials.pad, self.device, left=True)
            next_ids = self.model.head(self.model.body(tokens, is_causal=True)[:, -1]).float().argmax(-1).tolist()
            rows = [row + [token] for row, token in zip(rows, next_ids)]
            if stops.push(next_ids):
                break
        return stops.results()


def scorer(model: TailLM, tokenizer, arch: dict, trained: dict | None = None, **options) -> TailScorer:
    check_options(NAME, options, ("format", "stride"))
    chosen = choose_format(NAME, options.get("format"), "causal", FORMATS)
    return TailScorer(model, tokenizer, arch, chosen, options.get("stride"), trained=trained)


SPEC = FamilySpec(
    name=NAME,
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    arch_config=TailArch,
    check_arch=check_arch,
    positions=("learned", "rope", "alibi", "none"),
    scorer=scorer,
    formats=FORMATS,
    scorer_options=("format", "stride"),
    bench_shape=(2, 32),  # no transformers twin (hf_batch None); no entry in sweeps/bench/
)


# --------------------------------------------------------------------------- registering it


def _load_sweeps(folder: Path):
    spec = importlib.util.spec_from_file_location("sweeps", folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fifth(tmp_path, monkeypatch) -> Path:
    """The fifth family registered (one registry line, one preset YAML); returns the test's root."""
    from arches.config import sweeps_dir

    tree = tmp_path / "sweeps"
    shutil.copytree(sweeps_dir(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "arch" / f"{NAME}.yaml").write_text(PRESET)
    monkeypatch.setitem(sys.modules, "sweeps", _load_sweeps(tree))
    monkeypatch.setitem(registry.FAMILIES, NAME, __name__)
    assert sweeps_dir() == tree and registry.family(NAME) is SPEC
    return tmp_path


def test_a_fifth_family_trains_is_scored_benchmarked_and_reported(fifth) -> None:
    from arches.config import compose, group_choices
    from arches.train.loop import train
    from harness import bench
    from harness.eval.command import evaluate
    from harness.report import write_report

    assert NAME in group_choices("arch")
    results = fifth / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = train(compose([*local_corpus(fifth), f"results_dir={results}", f"arch={NAME}", "size=debug",
                                "train.micro_batch_size=4", "trainer.max_steps=4", "train.val_interval=2",
                                "train.log_interval=1", "run_name=fifth-a"]))  # fmt: skip
        run_dir = Path(record["run_dir"])
        scored = evaluate(compose([*local_corpus(fifth), f"run={run_dir}", "eval=quick", "eval.tasks=[corpus_cloze]",
                                   "eval.limit=4", "eval.generations=1", "eval.device=cpu"]))  # fmt: skip
        measured, path = bench.run_bench(["--quick", f"arch={NAME}", "bench.eval.questions=2", "bench.eval.lm_eval=false",
                                          f"results_dir={results}"])  # fmt: skip
        report = write_report(results).read_text()
    finally:
        torch.set_num_threads(threads)

    # trained: a completed run of the fifth family, its losses finite
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["status"] == "completed" and stored["family"] == NAME and stored["preset"] == NAME
    assert np.isfinite(stored["final_val_loss"]) and (run_dir / "logs" / "metrics.csv").is_file()
    # scored: lm-eval's accuracy on the bundled cloze task, in the family's own format
    entry = scored["evals"]["corpus_cloze|0"]
    assert entry["format"] == "causal" and 0 <= entry["metrics"]["acc"] <= 1
    # benchmarked: its own step at its spec's shape, against the reference decoder (it has no twin)
    row = measured["presets"][NAME]
    assert (row["family"], row["batch_size"], row["seq_len"]) == (NAME, 2, 32)
    assert row["ours"]["tokens_per_s"] > 0 and row["baseline"]["name"] == "arches gpt"
    assert row["scoring"]["format"] == "causal" and row["scoring"]["finite"] and path.is_file()
    # reported: the variant, its family and its score, with an exact likelihood (no PLL label)
    variants = report.split("## Variants\n", 1)[1].split("\n## ", 1)[0]
    assert f"| {stored['variant']} | {NAME} |" in variants and "(PLL)" not in variants
    assert "corpus_cloze" in report.split("## Scores\n", 1)[1]
