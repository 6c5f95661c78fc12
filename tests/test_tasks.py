"""The bundled corpus tasks: their data is a deterministic function of the held-out
documents, comes from the test documents only (few-shot examples from the validation
documents), and each task has the shape lm-eval expects; lm-eval loads them offline
through the loader beside the YAMLs, wherever the working directory is."""

from __future__ import annotations

import json
import random

import pytest
from conftest import tiny_cfg, tiny_text

from harness.tasks import build
from harness.tasks.build import TASK_NAMES, TASKS_DIR, TaskDataSpec, build_examples, ensure_task_data
from harness.tasks.corpus import WORD
from harness.tasks.loader import ENV_VAR, METADATA_KEY, load_corpus_task

SPEC = TaskDataSpec(max_examples=40, fewshot_pool=8, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 documents split 0.7/0.1/0.2: (train, val, test) lists of (name, text), and the task data folder."""
    from arches.data.cache import prepare

    root = tmp_path_factory.mktemp("tasks")
    rng = random.Random(3)
    (root / "corpus").mkdir()
    for index in range(40):
        (root / "corpus" / f"doc{index:02d}.txt").write_text(tiny_text(rng, rng.randint(15, 30)), encoding="utf-8")
    cfg = tiny_cfg(root / "cache", [root / "corpus"], val_fraction=0.1, test_fraction=0.2)
    prepared = prepare(cfg)
    splits = prepared.splits()
    texts = {f"corpus/{p.name}": p.read_text(encoding="utf-8") for p in (root / "corpus").iterdir()}
    docs = {split: [(name, texts[name]) for name in names] for split, names in splits.items()}
    folder = build.task_data_for_config(cfg, SPEC)
    return docs, folder


def rows(folder, task, split="test"):
    return [json.loads(line) for line in (folder / f"{task}.{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_task_data_is_deterministic(corpus, tmp_path):
    docs, folder = corpus
    first = build_examples(docs["test"], docs["val"], SPEC)
    again = build_examples(list(reversed(docs["test"])), docs["val"], SPEC)
    assert first == again
    copy = ensure_task_data(tmp_path / "entry", lambda: (docs["test"], docs["val"]), SPEC)
    for task in TASK_NAMES:
        for split in ("test", "train"):
            assert (copy / f"{task}.{split}.jsonl").read_bytes() == (folder / f"{task}.{split}.jsonl").read_bytes()
    assert copy.name == folder.name == SPEC.key()
    assert TaskDataSpec(max_examples=41, fewshot_pool=8, seed=7).key() != SPEC.key()
    # built once: a second call reads the folder and never asks for the documents
    assert ensure_task_data(tmp_path / "entry", lambda: pytest.fail("rebuilt"), SPEC) == copy


def test_every_task_has_test_and_fewshot_examples(corpus):
    docs, folder = corpus
    manifest = build.manifest(folder)
    for task in TASK_NAMES:
        assert 5 <= manifest["examples"][task]["test"] <= SPEC.max_examples
        assert 1 <= manifest["examples"][task]["train"] <= SPEC.fewshot_pool
    assert manifest["test_documents"] == sorted(name for name, _ in docs["test"])


def _texts(task: str, row: dict) -> list[str]:
    """The corpus text an example shows the model (distractors apart)."""
    if task == "corpus_ppl":
        return [row["text"]]
    if task == "corpus_cloze":
        return [row["context"] + row["continuation"]]
    return [row["context"] + "\n" + row["choices"][row["gold"]]]


def test_examples_come_from_held_out_documents_only(corpus):
    docs, folder = corpus
    train_text = "\n".join(text for _, text in docs["train"])
    for task in TASK_NAMES:
        for split, source in (("test", docs["test"]), ("train", docs["val"])):
            by_name = dict(source)
            for row in rows(folder, task, split):
                assert row["doc"] in by_name, (task, split, row["doc"])
                text = by_name[row["doc"]]
                for shown in _texts(task, row):
                    assert text[row["start"] :].startswith(shown.rstrip()) or shown.rstrip() in text
                    assert shown.strip() not in train_text
                if task == "corpus_next":
                    for index, choice in enumerate(row["choices"]):
                        assert choice not in train_text
                        if index != row["gold"]:  # distractors: other held-out documents of the same split
                            assert choice not in text
                            assert any(choice in other for name, other in source if name != row["doc"])


def test_cloze_targets_are_last_words_that_mostly_occurred_earlier(corpus):
    docs, folder = corpus
    texts = dict(docs["test"])
    examples = rows(folder, "corpus_cloze")
    for row in examples:
        assert row["continuation"] == " " + row["target"]
        text = texts[row["doc"]]
        passage_end = row["start"] + len(row["context"]) + len(row["continuation"])
        assert text[row["start"] : passage_end] == row["context"] + row["continuation"]
        rest_of_line = text[passage_end:].split("\n", 1)[0]
        assert rest_of_line.strip() and not any(ch.isalnum() for ch in rest_of_line)  # only punctuation follows
        earlier = {w.lower() for w in WORD.findall(row["context"])}
        assert row["in_context"] == (row["target"].lower() in earlier)
    assert sum(row["in_context"] for row in examples) / len(examples) >= 0.5
    # LAMBADA's preference: every seen-before target precedes the others in the file
    flags = [row["in_context"] for row in examples]
    assert flags == sorted(flags, reverse=True)


def test_next_has_four_distinct_choices_with_exactly_one_true_line(corpus):
    docs, folder = corpus
    texts = dict(docs["test"])
    golds = set()
    for row in rows(folder, "corpus_next"):
        assert len(row["choices"]) == 4 and len({c.lower() for c in row["choices"]}) == 4
        text = texts[row["doc"]]
        after = text[row["start"] + len(row["context"]) + 1 :].split("\n", 1)[0].strip()
        assert [c for c in row["choices"] if c == after] == [row["choices"][row["gold"]]]
        golds.add(row["gold"])
        lengths = sorted(len(c) for c in row["choices"])
        assert lengths[-1] <= 2 * lengths[0] + 20  # distractors of similar length
    assert len(golds) > 1  # the true line is not always in the same position


def test_loader_finds_the_data_by_metadata_or_environment(corpus, monkeypatch):
    _, folder = corpus
    dataset = load_corpus_task("corpus_next", **{METADATA_KEY: str(folder), "version": 1.0})
    assert set(dataset) == {"test", "train"}
    assert dataset["test"].to_list() == rows(folder, "corpus_next")
    monkeypatch.setenv(ENV_VAR, str(folder))
    assert len(load_corpus_task("corpus_ppl")["train"]) == len(rows(folder, "corpus_ppl", "train"))
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(ValueError, match=METADATA_KEY):
        load_corpus_task("corpus_ppl")


def test_lm_eval_loads_the_bundled_tasks_from_any_working_directory(corpus, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    _, folder = corpus
    monkeypatch.chdir(tmp_path)  # data must not resolve against the working directory
    manager = TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False, metadata={METADATA_KEY: str(folder)})
    assert set(TASK_NAMES) <= set(manager.all_tasks)
    tasks = manager.load(list(TASK_NAMES))["tasks"]
    assert tasks["corpus_ppl"].OUTPUT_TYPE == "loglikelihood_rolling"
    assert tasks["corpus_cloze"].OUTPUT_TYPE == "loglikelihood"
    assert tasks["corpus_next"].OUTPUT_TYPE == "multiple_choice"
    next_task = tasks["corpus_next"]
    assert len(next_task.eval_docs) == len(rows(folder, "corpus_next"))
    next_task.set_fewshot_seed(1234)
    pool = {row["context"] for row in rows(folder, "corpus_next", "train")}
    for doc in next_task.eval_docs:
        prompt = next_task.fewshot_context(doc, num_fewshot=1)
        shot, _, query = prompt.rpartition("\n\n" + doc["context"])
        assert query == "" and shot  # the scored example comes last, after its few-shot example
        assert any(shot.startswith(context) for context in pool) and doc["context"] not in pool
    cloze = tasks["corpus_cloze"]
    doc = cloze.eval_docs[0]
    assert cloze.doc_to_target(doc) == " " + doc["target"]
    assert cloze.fewshot_context(doc, num_fewshot=0) == doc["context"]
