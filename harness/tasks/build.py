"""The bundled corpus tasks' data, built deterministically from a corpus's held-out documents.

The three corpus tasks (corpus_ppl, corpus_cloze, corpus_next: the YAMLs beside this
file, their examples cut by harness/tasks/corpus.py) are scored on the *test* split
of the run's own corpus. The scored examples come from the test documents only; the few-shot pool
(`train` split) comes from the validation documents, so a few-shot example is
never a scored one and never shares its text (with no validation documents, the
pool is drawn from test passages that no scored example overlaps). Examples are
ordered by a seeded hash, so `limit=N` scores an unbiased sample of N, and the
build is a pure function of the documents and the `TaskDataSpec`: the same
corpus gives byte-identical files. The data lives in the corpus's cache entry,
`<cache entry>/tasks/<spec key>/`, built in a temp folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.tasks.corpus import Doc, cloze_candidates, next_candidates, ppl_candidates

# Bump when a change here or in corpus.py changes what the files hold (it is part of the folder key).
BUILD_VERSION = 1
TASK_NAMES = ("corpus_ppl", "corpus_cloze", "corpus_next")
TASKS_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TaskDataSpec:
    """What decides the task data besides the documents (and so names its folder)."""

    max_examples: int = 500  # scored examples per task
    fewshot_pool: int = 100  # few-shot examples per task
    seed: int = 1234

    def key(self) -> str:
        spec = {"version": BUILD_VERSION, **asdict(self)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _overlaps(used: dict[str, set[int]], doc: str, lines: range) -> bool:
    taken = used.setdefault(doc, set())
    return any(line in taken for line in lines)


def _select(candidates: Iterable[dict], limit: int, used: dict[str, set[int]]) -> list[dict]:
    """Candidates in their order, skipping any whose lines overlap one already taken.

    A candidate with a `_finish` callable is completed only when it would be taken
    (corpus_next's distractor search), and dropped if that returns None."""
    chosen = []
    for candidate in candidates:
        if len(chosen) >= limit:
            break
        lines = range(candidate["_first"], candidate["_last"] + 1)
        if _overlaps(used, candidate["doc"], lines):
            continue
        if "_finish" in candidate:
            candidate = candidate["_finish"](candidate)
            if candidate is None:
                continue
        used[candidate["doc"]].update(lines)
        chosen.append(candidate)
    return chosen


def _public(examples: list[dict]) -> list[dict]:
    return [{k: v for k, v in example.items() if not k.startswith("_")} for example in examples]


def build_examples(
    test_docs: Sequence[Doc], pool_docs: Sequence[Doc], spec: TaskDataSpec
) -> dict[str, dict[str, list[dict]]]:
    """{task: {"test": scored examples, "train": few-shot pool}} from the documents' text.

    `pool_docs` are held-out documents other than the test ones (the validation
    split); when there are none, the pool comes from test passages that no
    scored example overlaps.
    """
    test_docs = sorted(test_docs)
    pool_docs = sorted(pool_docs) if pool_docs else []
    builders = {"corpus_ppl": ppl_candidates, "corpus_cloze": cloze_candidates, "corpus_next": next_candidates}
    examples = {}
    for task, candidates in builders.items():
        used: dict[str, set[int]] = {}
        test = _select(candidates(test_docs, spec.seed), spec.max_examples, used)
        if pool_docs:
            pool = _select(candidates(pool_docs, spec.seed + 1), spec.fewshot_pool, {})
        else:
            pool = _select(candidates(test_docs, spec.seed + 1), spec.fewshot_pool, used)
        examples[task] = {"test": _public(test), "train": _public(pool)}
    return examples


def write_task_data(folder: Path, examples: dict[str, dict[str, list[dict]]], manifest: dict) -> Path:
    """Write `<task>.<split>.jsonl` and the manifest into a temp folder, then rename it to `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        counts = {}
        for task, splits in examples.items():
            for split, rows in splits.items():
                lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
                (temp / f"{task}.{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                counts.setdefault(task, {})[split] = len(rows)
        cloze = examples.get("corpus_cloze", {}).get("test", [])
        manifest = {
            **manifest,
            "build_version": BUILD_VERSION,
            "examples": counts,
            "cloze_target_in_context": round(sum(e["in_context"] for e in cloze) / len(cloze), 4) if cloze else None,
        }
        # last: the manifest marks the folder complete
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        try:
            os.replace(temp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():
                raise
            shutil.rmtree(temp, ignore_errors=True)  # another process built the same data first
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def task_data_folder(entry: Path, spec: TaskDataSpec) -> Path:
    return Path(entry) / "tasks" / spec.key()


def ensure_task_data(entry: Path, documents: Callable[[], tuple[list[Doc], list[Doc]]], spec: TaskDataSpec) -> Path:
    """The task data folder of a corpus cache entry, built from `documents()` -> (test, val) if missing."""
    folder = task_data_folder(entry, spec)
    if (folder / MANIFEST).is_file():
        return folder
    if folder.exists():  # incomplete (damaged by hand): never trusted
        shutil.rmtree(folder)
    test_docs, pool_docs = documents()
    examples = build_examples(test_docs, pool_docs, spec)
    manifest = {
        "spec": asdict(spec),
        "test_documents": sorted(name for name, _ in test_docs),
        "fewshot_documents": sorted(name for name, _ in pool_docs) if pool_docs else "test (disjoint passages)",
    }
    return write_task_data(folder, examples, manifest)


def task_data_for_config(cfg: Any, spec: TaskDataSpec) -> Path:
    """Build or reuse the task data of the corpus that `cfg` (a root config with `data` and
    `cache_dir`, e.g. a run's own config.yaml) names; prepares the corpus first if needed."""
    from arches.data.cache import prepare

    prepared = prepare(cfg)
    return ensure_task_data(prepared.cache_dir, lambda: tuple(corpus_documents(cfg, prepared, ("test", "val"))), spec)


def corpus_documents(cfg: Any, prepared: Any, splits: Sequence[str]) -> list[list[Doc]]:
    """[(name, text), ...] of each named split of a prepared corpus, by the names its splits.json records."""
    from arches.data.cache import build_source
    from arches.data.splits import unique_names

    documents = build_source(cfg.data, Path(str(cfg.cache_dir)).expanduser()).documents()
    # renamed exactly as the corpus was before splitting, so the split's names find their texts
    texts = {name: document.text for name, document in unique_names(documents).items()}
    recorded = prepared.splits()
    missing = [name for split in splits for name in recorded[split] if name not in texts]
    if missing:
        from arches.errors import UserError

        raise UserError(
            f"the corpus no longer holds the document '{missing[0]}' recorded in "
            f"{prepared.cache_dir / 'splits.json'}; the corpus changed since it was prepared: train again"
        )
    return [[(n, texts[n]) for n in recorded[split]] for split in splits]


def manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())
