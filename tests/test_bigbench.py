"""BIG-bench conversion on a fake source archive built here (nothing is downloaded):
the gold choice is the argmax of target_scores, the prompt is BIG-bench's own, the
converted tasks load in lm-eval, a member path escaping the folder is refused, and
offline without a cached archive is one line saying where to put it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from arches.errors import UserError
from harness.bigbench.archive import ARCHIVE_NAME
from harness.bigbench.command import ensure_bigbench
from harness.bigbench.convert import ConvertSpec, convert_archive

HYPERBATON = {
    "name": "hyperbaton",
    "append_choices_to_input": False,
    "examples": [
        {"input": f"Which sentence has the correct adjective order: a \" big red car {i} \" b \" red big car {i} \" ?",
         "target_scores": {"a": 1, "b": 0} if i % 3 else {"a": 0, "b": 1}}
        for i in range(30)
    ] + [{"input": "duplicate", "target_scores": {"a": 1, "b": 0}}] * 2
    + [{"input": "a tie", "target_scores": {"a": 1, "b": 1}}],
}  # fmt: skip
SOCIAL = {
    "name": "social_iqa",
    "task_prefix": "Answer {{like}} a person.\n",
    "few_shot_example_separator": "\n\n",
    "examples": [
        {"input": f"Tracy did thing {i}. What next?", "target_scores": {"Go home": 0, "Find a plan": 0.5, "Sleep": 1 if i % 2 else 0}}
        for i in range(20)
    ],
}  # fmt: skip


def fake_archive(path, tasks: dict, extra: dict | None = None):
    """A tar.gz laid out like bigbench-1.0.0.tar.gz: {task path: task.json content}, plus raw members."""
    with tarfile.open(path, "w:gz") as tar:
        members = {f"bigbench-1.0.0/bigbench/benchmark_tasks/{p}/task.json": json.dumps(t).encode() for p, t in tasks.items()}
        members["bigbench-1.0.0/setup.py"] = b"# not read"
        members.update(extra or {})
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def archive(tmp_path):
    return fake_archive(tmp_path / "bigbench-1.0.0.tar.gz", {"hyperbaton": HYPERBATON, "social_iqa": SOCIAL})


def rows(folder, task, split="test"):
    return [json.loads(line) for line in (folder / f"{task}.{split}.jsonl").read_text().splitlines()]


def test_gold_is_the_argmax_of_target_scores_and_the_prompt_is_bigbench_s(archive, tmp_path):
    out = tmp_path / "tasks"
    manifest = convert_archive(archive, out, ["hyperbaton", "social_iqa"], ConvertSpec(max_examples=100, fewshot_pool=4))
    info = manifest["hyperbaton"]
    assert (info["examples"], info["usable"], info["skipped"]) == (33, 31, 1)  # one duplicate dropped, the tie skipped
    assert (info["train"], info["test"]) == (4, 27) and info["chance"] == 0.5
    for row in rows(out, "hyperbaton") + rows(out, "hyperbaton", "train"):
        scores = row["target_scores"]
        assert row["gold"] == list(scores.values()).index(max(scores.values()))
        assert [c.strip() for c in row["choices"]] == list(scores)
        # BIG-bench's defaults: "\nQ: " + input + "\nA: ", the answer's space moved into the choices
        assert row["query"] == "\nQ: " + row["input"] + "\nA:" and row["choices"] == [" a", " b"]
    social = rows(out, "social_iqa")
    permuted = list(np.random.RandomState(42).permutation(sorted(SOCIAL["examples"][0]["target_scores"])))
    for row in social:
        assert row["gold"] == (2 if row["idx"] % 2 else 1)  # "Sleep" scores 1 for odd examples, else "Find a plan" 0.5
        assert row["query"] == "\nQ: " + row["input"] + "".join("\n  choice: " + c for c in permuted) + "\nA:"
    assert {r["idx"] for r in social} | {r["idx"] for r in rows(out, "social_iqa", "train")} == set(range(20))
    assert not {r["idx"] for r in social} & {r["idx"] for r in rows(out, "social_iqa", "train")}
    # converting again is a no-op, even without the archive
    archive.unlink()
    assert convert_archive(archive, out, ["hyperbaton"], ConvertSpec(max_examples=100, fewshot_pool=4)) == manifest


def test_converted_tasks_run_in_lm_eval_with_bigbench_s_few_shot_format(archive, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    out = tmp_path / "tasks"
    convert_archive(archive, out, ["social_iqa"], ConvertSpec(fewshot_pool=3))
    monkeypatch.chdir(tmp_path.parent)
    task = TaskManager(include_path=[str(out)], include_defaults=False).load(["social_iqa"])["tasks"]["social_iqa"]
    assert task.OUTPUT_TYPE == "multiple_choice" and len(task.fewshot_docs()) == 3
    task.set_fewshot_seed(0)
    doc = task.eval_docs[0]
    prompt = task.fewshot_context(doc, num_fewshot=2)
    assert prompt.startswith("Answer {{like}} a person.\n\nQ: ")  # task_prefix once, verbatim (no Jinja)
    assert prompt.endswith("\n\n" + doc["query"]) and prompt.count("\nA: ") == 2
    requests = task.construct_requests(doc, prompt)
    assert [r.args[1] for r in requests] == doc["choices"]


def test_member_paths_escaping_the_folder_are_refused(tmp_path):
    evil = fake_archive(tmp_path / "evil.tar.gz", {"hyperbaton": HYPERBATON}, {"bigbench-1.0.0/../../escaped.txt": b"x"})
    out = tmp_path / "tasks"
    with pytest.raises(UserError, match="escaping"):
        convert_archive(evil, out, ["hyperbaton"])
    assert not list(out.glob("*.yaml")) and not (tmp_path.parent / "escaped.txt").exists()
    absolute = fake_archive(tmp_path / "abs.tar.gz", {"hyperbaton": HYPERBATON}, {"/tmp/escaped.txt": b"x"})
    with pytest.raises(UserError, match="escaping"):
        convert_archive(absolute, out, ["hyperbaton"])


def test_a_missing_task_or_unknown_name_is_one_clear_error(archive, tmp_path):
    with pytest.raises(UserError, match="timedial/task.json"):
        convert_archive(archive, tmp_path / "tasks", ["timedial"])
    with pytest.raises(UserError, match="Did you mean 'hyperbaton'"):
        convert_archive(archive, tmp_path / "tasks", ["hyperbatn"])


def test_a_cached_archive_with_the_wrong_hash_is_refused(archive, tmp_path):
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    archive.rename(cache / "downloads" / ARCHIVE_NAME)
    with pytest.raises(UserError, match="not the pinned"):
        ensure_bigbench(cache, ["hyperbaton"], ConvertSpec())


def test_offline_without_a_cached_archive_says_how_to_fetch_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="not converted yet"):
        ensure_bigbench(cache, ["hyperbaton"], ConvertSpec(), fetch=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: as offline, without a network call
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", "data", "bigbench", f"cache_dir={cache}", "eval.bigbench.tasks=[hyperbaton]"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip download --no-deps --no-binary :all: bigbench==1.0.0" in lines[0]
    assert str(cache / "downloads") in lines[0]
    assert not (cache / "bigbench" / "tasks").exists()
