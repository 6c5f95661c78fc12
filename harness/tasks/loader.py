"""lm-eval's `custom_dataset` for the local tasks: jsonl files -> a `DatasetDict`.

lm-eval imports this file by its path, from the YAML beside it (`custom_dataset:
!function loader.load_corpus_task`), so it is self-contained: it imports nothing
from arches. lm-eval calls it with the task's `dataset_kwargs` (`arches_task`)
and the TaskManager's metadata as keyword arguments.

- `load_corpus_task`: the bundled corpus tasks (corpus_ppl, corpus_cloze,
  corpus_next). Their data is built per corpus, so it lives in the corpus's cache
  entry, `<cache entry>/tasks/<key>/`; the folder arrives as the metadata key
  `arches_task_data` (what `arches eval` passes) or the environment variable
  `ARCHES_TASK_DATA` (for lm-eval's own CLI: `--metadata '{"arches_task_data": ...}'`
  works too).
- `load_pairs_task`: the minimal-pair tasks (pairs_swap, pairs_lexical, pairs_morph,
  pairs_halves; group corpus_pairs), built per corpus and tokenizer into
  `<cache entry>/tasks/pairs-<key>/<kind>/`; the `pairs-<key>` folder arrives as the
  metadata key `arches_pairs_data` or the environment variable `ARCHES_PAIRS_DATA`.
- `load_local_task`: tasks whose data sits beside this file (the converted
  BIG-bench tasks, which get a copy of it).

Each task has `<task>.test.jsonl` (what is scored) and `<task>.train.jsonl`
(the few-shot pool, never the scored examples).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

METADATA_KEY = "arches_task_data"
ENV_VAR = "ARCHES_TASK_DATA"
PAIRS_METADATA_KEY = "arches_pairs_data"
PAIRS_ENV_VAR = "ARCHES_PAIRS_DATA"
SPLITS = ("test", "train")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_folder(folder: Path, task: str):
    import datasets

    missing = [f"{task}.{split}.jsonl" for split in SPLITS if not (folder / f"{task}.{split}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"task {task}: {folder} has no {', '.join(missing)}; rebuild the task data")
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(read_jsonl(folder / f"{task}.{split}.jsonl")) for split in SPLITS}
    )


def _data_folder(task: str, given: str | None, metadata_key: str, env_var: str, layout: str, how: str = "") -> Path:
    """A built task's data folder, from lm-eval's metadata or the environment, or a clear error."""
    folder = given or os.environ.get(env_var)
    if not folder:
        raise ValueError(
            f"task {task} is built from a corpus's held-out documents and needs its data folder: {how}"
            f"with lm-eval's own CLI pass --metadata '{{\"{metadata_key}\": \"<cache entry>/tasks/{layout}\"}}' "
            f"or set {env_var}"
        )
    return Path(folder)


def load_corpus_task(arches_task: str, arches_task_data: str | None = None, **_metadata):
    how = "`arches eval run=<run folder>` builds and passes it; "
    return load_folder(_data_folder(arches_task, arches_task_data, METADATA_KEY, ENV_VAR, "<key>", how), arches_task)


def load_pairs_task(arches_task: str, arches_pairs_data: str | None = None, **_metadata):
    folder = _data_folder(arches_task, arches_pairs_data, PAIRS_METADATA_KEY, PAIRS_ENV_VAR, "pairs-<key>")
    kind = arches_task.removeprefix("pairs_")
    if not (folder / kind).is_dir():
        raise FileNotFoundError(f"task {arches_task}: {folder} has no {kind}/; add {kind} to eval.corpus.pair_kinds")
    return load_folder(folder / kind, arches_task)


def load_local_task(arches_task: str, **_metadata):
    return load_folder(Path(__file__).resolve().parent, arches_task)


def ppl_results(doc: dict, results: list) -> dict:
    """Per-passage (loglikelihood, words/bytes) pairs, aggregated by lm-eval into
    word perplexity, byte perplexity and bits per byte, as its wikitext task does."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"].strip()))
    size = len(doc["text"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
