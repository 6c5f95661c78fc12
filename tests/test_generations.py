"""Samples (issue 16, item 8): after its evaluation a run greedily continues held-out prompts
(harness/eval/generations.py), the same prompts for every family, T5 through its sentinel; the
report shows them side by side (harness/report/samples.py) and names a run without them.

Two real debug runs (gpt and t5) trained for a few steps by the real Trainer on the tiny
corpus, evaluated by `evaluate` (lm-eval's simple_evaluate) with eval.generations=2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import local_corpus

from arches.config import compose
from arches.errors import UserError
from harness.eval.command import evaluate
from harness.eval.generations import (
    GENERATIONS_FILE,
    MAX_NEW_TOKENS,
    PROMPT_WORDS,
    choose_prompts,
    write_generations,
)

PRESETS = ("gpt", "t5")
FORMATS = {"gpt": "causal", "t5": "t5_sentinel"}
FAMILIES = {"gpt": "decoder", "t5": "encoder_decoder"}


def eval_cfg(root: Path, run_dir: Path, *overrides: str):
    return compose([*local_corpus(root), f"run={run_dir}", "eval=quick", "eval.tasks=[corpus_ppl]", "eval.limit=2",
                    "eval.device=cpu", *overrides])  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(root, {preset: run folder}): each trained 4 steps at debug size, then evaluated with 2 samples."""
    from arches.train.loop import train

    root = tmp_path_factory.mktemp("generations")
    runs = {}
    for preset in PRESETS:
        train(compose([*local_corpus(root), f"results_dir={root / 'results'}", f"arch={preset}", "size=debug",
                       "train.micro_batch_size=4", "trainer.max_steps=4", "train.progress=none",
                       f"run_name={preset}"]))  # fmt: skip
        runs[preset] = root / "results" / preset
        evaluate(eval_cfg(root, runs[preset], "eval.generations=2"))
    return root, runs


def generations(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / GENERATIONS_FILE).read_text(encoding="utf-8"))


def test_each_family_continues_the_same_held_out_prompts_in_its_format(evaluated):
    _, runs = evaluated
    records = {preset: generations(run_dir) for preset, run_dir in runs.items()}
    for preset, record in records.items():
        assert (record["format"], record["max_tokens"]) == (FORMATS[preset], MAX_NEW_TOKENS)
        assert record["decoding"] == "greedy" and record["family"] == FAMILIES[preset]
        assert len(record["prompts"]) == len(record["continuations"]) == 2 and record["unsupported"] is None
        assert all(len(prompt.split()) == PROMPT_WORDS for prompt in record["prompts"])
        assert all(isinstance(text, str) for text in record["continuations"])
    # a few steps teach the blank formats to end a blank at once (T5's next sentinel), not yet a decoder
    assert all(records["gpt"]["continuations"]), records["gpt"]["continuations"]
    assert records["gpt"]["prompts"] == records["t5"]["prompts"]  # the same prompts for every run
    assert records["gpt"]["documents"] == records["t5"]["documents"]
    assert len(set(records["gpt"]["documents"])) == 2  # one per document while there are documents enough
    # from the corpus's test documents, which no run trained on
    from arches.data.cache import prepare

    cfg = compose(local_corpus(evaluated[0]))
    assert set(records["gpt"]["documents"]) <= set(prepare(cfg).splits()["test"])


def test_a_second_evaluation_reuses_the_samples_and_another_count_replaces_them(evaluated):
    from harness.eval.settings import _corpus_config, _run_folder
    from harness.lm.model import ArchesLM

    root, runs = evaluated
    path = runs["gpt"] / "eval" / GENERATIONS_FILE
    before = (path.read_text(), path.stat().st_mtime_ns)
    cfg = eval_cfg(root, runs["gpt"], "eval.generations=2")
    run_dir, run_cfg = _run_folder(cfg)
    model = ArchesLM(run=str(run_dir), device="cpu", cache=False)
    write_generations(run_dir, model, _corpus_config(run_cfg, cfg), cfg)
    assert (path.read_text(), path.stat().st_mtime_ns) == before  # same checkpoint and settings: untouched
    copy = root / "copy"
    shutil.copytree(runs["gpt"], copy)
    cfg = eval_cfg(root, copy, "eval.generations=3")
    write_generations(copy, ArchesLM(run=str(copy), device="cpu", cache=False), _corpus_config(run_cfg, cfg), cfg)
    record = generations(copy)
    assert len(record["continuations"]) == 3 and record["prompts"][:2] == generations(runs["gpt"])["prompts"]
    shutil.rmtree(copy)


def test_t5_fills_its_sentinel_blank_within_its_trained_target_length(evaluated):
    """With every weight drawn from N(0, 0.05) (norms from N(1, 0.05)), off what 4 steps taught,
    T5 writes tokens into the blank after the prompt; asked for MAX_NEW_TOKENS it writes what it
    writes when asked for its trained target length, which is shorter."""
    from harness.eval.generations import continue_prompts
    from harness.lm.model import ArchesLM

    _, runs = evaluated
    lm = ArchesLM(run=str(runs["t5"]), device="cpu", cache=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in lm.model.named_parameters():
            parameter.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.05)
    prompts = generations(runs["t5"])["prompts"]
    continuations, why = continue_prompts(lm.scorer, prompts)
    assert why is None and all(continuations), continuations
    room = lm.scorer.continuation_room()
    assert room < MAX_NEW_TOKENS  # the debug runs trained on 32-token windows: short targets
    assert continue_prompts(lm.scorer, prompts, room) == (continuations, None)
    assert continue_prompts(lm.scorer, prompts, 1)[0] != continuations


def test_the_report_shows_both_families_side_by_side_and_names_a_run_without_samples(evaluated):
    from harness.report import write_report

    root, runs = evaluated
    results = root / "results"
    old = results / "old"  # a run evaluated before samples were written
    shutil.copytree(runs["gpt"], old)
    (old / "eval" / GENERATIONS_FILE).unlink()
    record = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**record, "run_name": "old", "variant": "old"}))
    try:
        report = write_report(results).read_text(encoding="utf-8")
        html = (results / "report.html").read_text(encoding="utf-8")
    finally:
        shutil.rmtree(old)
    section = report.split("## Samples", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| prompt"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["prompt", "gpt", "t5"]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line != header and "---" not in line]
    assert len(rows) == 2
    first_prompt = generations(runs["gpt"])["prompts"][0].split()[0]
    assert rows[0].startswith(f"| {first_prompt}")
    assert "Greedy decoding" in section and "seed 0 of each variant" in section
    assert "gpt (decoder) `causal`" in section and "t5 (encoder_decoder) `t5_sentinel`" in section
    assert f"No eval/{GENERATIONS_FILE} in old (" in section
    assert "<h2>Samples</h2>" in html and "<code>&lt;extra_id_0&gt;</code>" in html  # the renderer escapes


def test_a_masked_lm_says_it_does_not_generate_and_prompts_are_a_function_of_corpus_and_seed(evaluated):
    from omegaconf import OmegaConf

    from arches.data.cache import prepare
    from arches.data.tokenizer import load_tokenizer
    from arches.registry import family, model_config
    from harness.eval.generations import continue_prompts, held_out_prompts
    from harness.report.samples import samples_blocks

    root, _ = evaluated
    cfg = compose(local_corpus(root))
    prepared = prepare(cfg)
    prompts = held_out_prompts(cfg, prepared, 3, 1234)
    assert prompts == held_out_prompts(cfg, prepared, 3, 1234) and prompts != held_out_prompts(cfg, prepared, 3, 7)
    documents = [("a", "Too short.\n"), ("b", "one two three four five six seven eight nine ten eleven twelve\n")]
    assert choose_prompts(documents, 2, 0) == []  # short lines and lines that open in lower case are no prompts
    arch = OmegaConf.to_container(compose(["arch=bert"]).arch)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    spec = family("encoder")
    torch.manual_seed(0)
    model = spec.build(model_config(arch, {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 64},
                                    prepared.vocab_size), arch)  # fmt: skip
    continuations, why = continue_prompts(spec.scorer(model, tokenizer, arch), [p["prompt"] for p in prompts])
    assert continuations is None and "do not generate" in why
    blocks = samples_blocks([{"run_dir": str(root / "none"), "run_name": "bert", "variant": "bert", "seed": 0,
                              "status": "completed"}], ["bert"])  # fmt: skip
    assert blocks[0] == ("h2", "Samples") and len(blocks) == 2 and blocks[1][1].startswith("No samples")


def test_a_bad_generations_count_is_one_line_and_writes_nothing(evaluated):
    root, runs = evaluated
    samples = runs["gpt"] / "eval" / GENERATIONS_FILE
    before = ((runs["gpt"] / "run.json").read_text(), samples.stat().st_mtime_ns)
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(UserError) as error:
            evaluate(eval_cfg(root, runs["gpt"], f"eval.generations={bad}"))
        assert "eval.generations" in str(error.value) and "\n" not in str(error.value)
    assert ((runs["gpt"] / "run.json").read_text(), samples.stat().st_mtime_ns) == before
