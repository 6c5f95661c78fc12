"""`harness.lm.model.ArchesLM` with the real lm-eval: run folders built here, a tiny local
multiple-choice task, few-shot prompts as lm-eval builds them, the request cache
keyed by checkpoint content, and lm-eval's own CLI through `arches lm-eval`."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import CHOICE_QUESTIONS
from lm_eval.api.instance import Instance
from test_scorers import build_model, requests, tokenizer  # noqa: F401  (the session tokenizer fixture)

from arches.data.tokenizer import tokenizer_hash, train_tokenizer
from arches.errors import UserError
from arches.families.scoring import UnsupportedRequest
from arches.train.record import update_record
from arches.train.run_folder import TOKENIZER_FILE, save_checkpoint
from harness.lm.cache import CACHE_FILE, checkpoint_sha256
from harness.lm.model import ArchesLM

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_run(folder: Path, preset: str, tokenizer, seed: int = 0) -> Path:
    """A run folder as `arches train` leaves it: checkpoint, run.json, tokenizer.json."""
    model, arch = build_model(preset, tokenizer, seed=seed)
    save_checkpoint(folder, model, arch["family"], arch, model.cfg)
    tokenizer.save(str(folder / TOKENIZER_FILE))
    update_record(folder, tokenizer_hash=tokenizer_hash(tokenizer), family=arch["family"], status="completed")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("runs")
    return {name: make_run(root / name, name, tokenizer) for name in ("gpt", "bert", "t5")}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A tiny local multiple-choice task and a generation task, data loaded by a
    `custom_dataset` function next to the YAML (relative data_files would resolve
    against the working directory)."""
    folder = tmp_path_factory.mktemp("tasks")
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in CHOICE_QUESTIONS]
    (folder / "tiny_loader.py").write_text(textwrap.dedent(f"""
        from datasets import Dataset, DatasetDict

        ROWS = {rows!r}

        def load(**kwargs):
            return DatasetDict({{"train": Dataset.from_list(ROWS[:4]), "test": Dataset.from_list(ROWS[4:])}})
    """))
    (folder / "tiny_choice.yaml").write_text(textwrap.dedent("""
        task: tiny_choice
        custom_dataset: !function tiny_loader.load
        output_type: multiple_choice
        training_split: train
        test_split: test
        doc_to_text: "Q: {{question}}\\nA:"
        doc_to_target: answer
        doc_to_choice: choices
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
    """))
    (folder / "tiny_generate.yaml").write_text(textwrap.dedent("""
        task: tiny_generate
        custom_dataset: !function tiny_loader.load
        output_type: generate_until
        test_split: test
        doc_to_text: "Q: {{question}}\\nA:"
        doc_to_target: "{{choices[answer]}}"
        generation_kwargs:
          until: ["\\n"]
          max_gen_toks: 4
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
    """))
    return folder


class RecordingScorer:
    """Wraps a family scorer and records what reaches it (the model stays real)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.pairs: list[tuple[str, str]] = []
        self.calls = 0

    def loglikelihood(self, pairs, batch_size):
        self.calls += 1
        self.pairs.extend(pairs)
        return self.inner.loglikelihood(pairs, batch_size)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def recording(lm: ArchesLM) -> RecordingScorer:
    lm.scorer = RecordingScorer(lm.scorer)
    return lm.scorer


def instances(kind: str, arguments: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(arguments)]


# --- construction ---


def test_model_args_as_lm_eval_passes_them(runs):
    # lm-eval's CLI always adds its own batch_size (1 by default): model_args wins
    lm = ArchesLM.create_from_arg_string(f"run={runs['gpt']},batch_size=8", {"batch_size": 1, "device": None})
    assert lm.batch_size == 8 and lm.scoring_format == "causal" and lm.dtype == "float32"
    lm = ArchesLM.create_from_arg_obj({"run": str(runs["t5"]), "format": "plain", "cache": "false"}, {"batch_size": "auto"})
    assert lm.scoring_format == "plain" and lm.cache is None and lm.batch_size == 16  # auto on a CPU
    assert ArchesLM(run=runs["t5"] / "checkpoint").scoring_format == "t5_sentinel"  # a checkpoint folder works too
    assert ArchesLM(run=runs["bert"]).get_model_info()["scoring_format"] == "pll_word_l2r"
    with pytest.raises(UserError, match="unknown arches model argument 'bach_size'.*Did you mean 'batch_size'"):
        ArchesLM.create_from_arg_string(f"run={runs['gpt']},bach_size=8")


def test_a_different_tokenizer_is_refused_naming_both_hashes(runs, tmp_path, tokenizer):
    run = tmp_path / "run"
    shutil.copytree(runs["gpt"], run)
    other = train_tokenizer(["a completely different corpus of words " * 20, "zebra yak xylophone " * 20], 380)
    other.save(str(run / TOKENIZER_FILE))
    with pytest.raises(UserError) as error:
        ArchesLM(run=run)
    assert tokenizer_hash(other) in str(error.value) and tokenizer_hash(tokenizer) in str(error.value)


def test_a_run_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match="has no checkpoint"):
        ArchesLM(run=tmp_path)


# --- the three request types, sorted and batched, answered in the original order ---


def test_results_come_back_in_request_order(runs):
    lm = ArchesLM(run=runs["gpt"], batch_size=3, cache=False)
    pairs = requests()
    want = lm.scorer.loglikelihood(pairs, 1)
    got = lm.loglikelihood(instances("loglikelihood", pairs))
    for (a, greedy_a), (b, greedy_b) in zip(got, want):
        assert a == pytest.approx(b, abs=TOLERANCE) and greedy_a == greedy_b
    texts = [c + x for c, x in pairs[:5]]
    want_rolling = lm.scorer.loglikelihood_rolling(texts, 1)
    got_rolling = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in texts]))
    assert got_rolling == pytest.approx(want_rolling, abs=TOLERANCE)
    contexts = ["The old king", "A young sailor spoke of the winter sea and", "Her brother"]
    kwargs = {"until": ["\n"], "max_gen_toks": 5, "do_sample": False}
    got_text = lm.generate_until(instances("generate_until", [(c, kwargs) for c in contexts]))
    assert got_text == [lm.scorer.generate([c], [["\n"]], 5)[0] for c in contexts]


def test_generate_until_on_an_encoder_is_a_clear_error(runs):
    lm = ArchesLM(run=runs["bert"], cache=False)
    with pytest.raises(UnsupportedRequest, match="encoder models do not generate") as error:
        lm.generate_until(instances("generate_until", [("The old king", {"until": ["\n"]})]))
    assert isinstance(error.value, NotImplementedError)  # lm-eval's signal for an unsupported request type
    assert isinstance(error.value, UserError)  # the arches CLI prints it as one line, exit code 2


# --- few-shot prompts reach the model as lm-eval builds them ---


def test_few_shot_prompts_reach_the_scorer_as_lm_eval_builds_them(runs, task_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = ArchesLM(run=runs["gpt"], batch_size=4, cache=False)
    scorer = recording(lm)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["tiny_choice"], num_fewshot=2, limit=4, log_samples=True,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
    )
    samples = results["samples"]["tiny_choice"]
    sent = sorted(tuple(arguments) for sample in samples for arguments in sample["arguments"])
    assert sorted(scorer.pairs) == sent and len(sent) == 4 * 3
    train_questions = {q for q, _, _ in CHOICE_QUESTIONS[:4]}
    for context, continuation in scorer.pairs:
        blocks = context.split("\n\n")
        assert len(blocks) == 3 and blocks[-1].startswith("Q: ") and blocks[-1].endswith("\nA:")
        for shot in blocks[:2]:  # two solved training examples, question then answer
            question, answer = shot.removeprefix("Q: ").split("\nA: ")
            assert question in train_questions
            assert [c[a] for q, c, a in CHOICE_QUESTIONS if q == question] == [answer]
        assert continuation.startswith(" ")
    assert 0.0 <= results["results"]["tiny_choice"]["acc,none"] <= 1.0


# --- the request cache: keyed by checkpoint content and request ---


def test_request_cache_serves_the_same_checkpoint_only(tmp_path, tokenizer):
    run = make_run(tmp_path / "run", "t5", tokenizer, seed=0)
    batch = instances("loglikelihood", requests())
    first = ArchesLM(run=run, batch_size=4)
    scorer = recording(first)
    scores = first.loglikelihood(batch)
    assert scorer.calls > 0 and (run / CACHE_FILE).exists()

    again = ArchesLM(run=run, batch_size=16)
    scorer = recording(again)
    assert again.loglikelihood(batch) == scores and scorer.calls == 0  # all served from the cache

    other_format = ArchesLM(run=run, format="plain")
    scorer = recording(other_format)
    other_format.loglikelihood(batch[:2])
    assert scorer.pairs == [i.args for i in batch[:2]]  # the scoring format is part of the key

    old_hash = checkpoint_sha256(run)
    make_run(run, "t5", tokenizer, seed=1)  # new weights, same folder path
    assert checkpoint_sha256(run) != old_hash
    retrained = ArchesLM(run=run)
    scorer = recording(retrained)
    new_scores = retrained.loglikelihood(batch)
    assert len(scorer.pairs) == len(batch)  # nothing served from the old model
    assert all(abs(a - b) > 1e-4 for (a, _), (b, _) in zip(new_scores, scores))
    with sqlite3.connect(run / CACHE_FILE) as connection:
        assert connection.execute("SELECT COUNT(DISTINCT checkpoint) FROM results").fetchone()[0] == 2


# --- lm-eval's own CLI, through `arches lm-eval` ---


def arches_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "arches.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_arches_lm_eval_runs_lm_evals_own_cli(runs, task_dir, tmp_path):
    out = tmp_path / "out"
    done = arches_cli(
        "lm-eval", "--model", "arches", "--model_args", f"run={runs['gpt']},batch_size=8", "--tasks", "tiny_choice",
        "--include_path", str(task_dir), "--limit", "4", "--output_path", str(out), "--log_samples", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [results_file] = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())
    assert results["results"]["tiny_choice"]["acc,none"] >= 0.0
    assert results["config"]["scoring_format"] == "causal"
    assert results["config"]["checkpoint_sha256"] == checkpoint_sha256(runs["gpt"])
    assert glob.glob(str(out / "**" / "samples_tiny_choice_*.jsonl"), recursive=True)


def test_a_generate_until_task_on_an_encoder_is_a_clear_error(runs, task_dir):
    """Through lm-eval's evaluator (the CLI path minus indexing lm-eval's 14k bundled
    tasks): a UserError, which `arches` prints as one line with exit code 2."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with pytest.raises(UnsupportedRequest, match="^encoder models do not generate"):
        lm_eval.simple_evaluate(
            model="arches", model_args=f"run={runs['bert']}", tasks=["tiny_generate"], limit=2,
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        )
