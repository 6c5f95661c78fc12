"""The datatrove engine (arches.data.engine, the optional `datatrove` extra): its local executor
with 2 workers tokenizes a local corpus into an arches cache entry holding, per split, exactly
arches' tokens of each document then <eos>, with each name in the split `split_of` gives; the
entry equals the one `data.stream=true` builds with the same tokenizer, and `arches train`
(a real subprocess) reads it as a cache hit. Skipped without datatrove installed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("datatrove")

from conftest import tiny_cfg, tiny_text

from arches.data.cache import entry_is_complete, prepare
from arches.data.local import LocalSource
from arches.data.splits import SPLITS
from arches.data.stream import split_of
from arches.data.tokenizer import Specials, load_tokenizer, train_tokenizer

VAL, TEST = 0.15, 0.15


def write_corpus(folder: Path) -> None:
    """Three .jsonl files (blank and whitespace-only lines, unicode, literal special tokens) and two .txt files."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for index, count in enumerate((40, 7, 25)):
        lines = []
        for number in range(count):
            text = tiny_text(rng, rng.randint(2, 8))
            if number % 9 == 3:
                text = "café <eos> [MASK] naïve — " + text
            lines.append(json.dumps({"text": text}, ensure_ascii=number % 2 == 0))
            if number % 11 == 5:
                lines.extend(["", json.dumps({"text": "   "})])
        (folder / f"part{index}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for index in range(2):
        (folder / f"note{index}.txt").write_text(tiny_text(rng, 20), encoding="utf-8")


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """The corpus, a tokenizer trained by arches, and the engine's entry (3 tasks, 2 workers)."""
    from arches.data.engine import engine_pipeline, entry_from_engine

    root = tmp_path_factory.mktemp("engine")
    corpus = root / "corpus"
    write_corpus(corpus)
    texts = [d.text for d in LocalSource([str(corpus)]).iter_documents()]
    tokenizer_path = root / "tokenizer.json"
    train_tokenizer(iter(texts), 512).save(str(tokenizer_path))
    cfg = tiny_cfg(root / "cache", [corpus], val_fraction=VAL, test_fraction=TEST)
    executor = engine_pipeline(cfg, tokenizer_path, root / "tokens", "local", tasks=3, workers=2)
    executor.run()
    prepared = entry_from_engine(root / "tokens")
    return SimpleNamespace(root=root, corpus=corpus, tokenizer_path=tokenizer_path, cfg=cfg, prepared=prepared)


def test_every_document_has_arches_tokens_in_its_split(engine_run):
    run = engine_run
    assert entry_is_complete(run.prepared.cache_dir)
    assert run.prepared.stats["layout"] == "datatrove-1" and run.prepared.stats["tasks"] == 3
    assert run.prepared.stats["engine_version"]
    tokenizer = load_tokenizer(run.tokenizer_path)
    eos = Specials.from_tokenizer(tokenizer).eos
    documents = {d.name: d.text for d in LocalSource([str(run.corpus)]).iter_documents()}
    splits = run.prepared.splits()
    assert sorted(n for names in splits.values() for n in names) == sorted(documents)  # each once
    assert "corpus/part0.jsonl:1" in documents and "corpus/note1.txt" in documents  # arches' names
    for split in SPLITS:
        tokens, starts = run.prepared.tokens(split), run.prepared.doc_starts(split)
        assert len(starts) == len(splits[split]) == run.prepared.stats["splits"][split]["documents"] > 0
        assert len(tokens) == run.prepared.stats["splits"][split]["tokens"]
        ends = [*starts[1:], len(tokens)]
        for name, start, end in zip(splits[split], starts, ends, strict=True):
            assert split_of(name, VAL, TEST) == split
            assert tokens[start:end].tolist() == tokenizer.encode(documents[name]).ids + [eos], name
    literal = next(name for name in splits["train"] if "<eos>" in documents[name])
    start = starts_of(run.prepared, "train")[splits["train"].index(literal)]
    length = len(tokenizer.encode(documents[literal]).ids)
    assert eos not in run.prepared.tokens("train")[start : start + length]  # a literal "<eos>" stays text


def starts_of(prepared, split: str) -> list[int]:
    return prepared.doc_starts(split).tolist()


def test_the_entry_equals_the_streamed_one_whatever_the_task_count(engine_run, tmp_path):
    from arches.data.engine import engine_pipeline, entry_from_engine

    run = engine_run
    streamed = prepare(tiny_cfg(tmp_path / "cache", [run.corpus], val_fraction=VAL, test_fraction=TEST, stream=True,
                                tokenizer_path=str(run.tokenizer_path)))  # fmt: skip
    assert streamed.cache_dir.name == run.prepared.cache_dir.name  # the key `arches train` looks for
    engine_pipeline(run.cfg, run.tokenizer_path, tmp_path / "tokens", tasks=7, workers=2).run()  # more tasks than files
    seven = entry_from_engine(tmp_path / "tokens", tmp_path / "seven")
    assert seven.stats["tasks"] == 7
    for other in (streamed, seven):
        assert other.splits() == run.prepared.splits()
        for split in SPLITS:
            assert np.array_equal(other.tokens(split), run.prepared.tokens(split))
            assert np.array_equal(other.doc_starts(split), run.prepared.doc_starts(split))
        assert other.stats["splits"] == run.prepared.stats["splits"]
    assert (tmp_path / "tokens" / "logs" / "completions").is_dir()  # datatrove's own record of finished tasks


def test_unfinished_tasks_and_other_sources_fail_in_one_line(engine_run, tmp_path):
    from arches.data.engine import engine_pipeline, entry_from_engine
    from arches.errors import UserError

    run = engine_run
    engine_pipeline(run.cfg, run.tokenizer_path, tmp_path / "tokens", tasks=2)  # built, never run
    with pytest.raises(UserError, match="2 of the 2 tasks have not finished"):
        entry_from_engine(tmp_path / "tokens", tmp_path / "entry")
    assert not (tmp_path / "entry").exists()
    with pytest.raises(UserError, match="data=local only"):
        engine_pipeline(tiny_cfg(tmp_path, [run.corpus], source="classics"), run.tokenizer_path, tmp_path / "x")
    slurm = engine_pipeline(run.cfg, run.tokenizer_path, tmp_path / "z", "slurm", tasks=4, time="1:00:00",
                            partition="cpu")  # built, not submitted (no Slurm here)
    assert type(slurm).__name__ == "SlurmPipelineExecutor" and slurm.tasks == 4
    with pytest.raises(UserError, match="executor"):
        engine_pipeline(run.cfg, run.tokenizer_path, tmp_path / "y", executor="ray")


def test_arches_train_reads_the_engine_entry(engine_run, tmp_path):
    run = engine_run
    before = (run.prepared.cache_dir / "stats.json").read_text()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "arches.cli", "train", "data=local", f"data.paths=[{run.corpus}]", "data.seq_len=32",
         f"data.val_fraction={VAL}", f"data.test_fraction={TEST}", "data.stream=true",
         f"data.tokenizer_path={run.tokenizer_path}", f"cache_dir={run.root / 'cache'}",
         f"results_dir={tmp_path / 'results'}",
         "arch=gpt", "size=debug", "trainer.max_steps=2", "train.micro_batch_size=4", "run_name=engine"],
        check=False, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run.prepared.cache_dir / "stats.json").read_text() == before  # a cache hit: the engine's entry, not rebuilt
    assert [p.name for p in (run.root / "cache" / "corpora").iterdir()] == [run.prepared.cache_dir.name]
    assert (tmp_path / "results" / "engine" / "tokenizer.json").read_bytes() == run.tokenizer_path.read_bytes()
