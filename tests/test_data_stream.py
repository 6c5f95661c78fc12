"""Streaming preparation (`data.stream=true`, arches.data.stream): a corpus much larger than the
memory it is prepared in, shards identical at 1 and 2 processes and after a SIGKILL and a rerun,
and each bad case (a corrupted shard, a full disk, a changed shard size, a row without its text)
one line with no entry marked complete. Real subprocesses, real kills, real file-size limits."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arches.config import compose
from arches.data.cache import entry_is_complete, prepare
from arches.data.splits import SPLITS
from arches.data.stream import split_of

WORDS = ("the king and queen of a far land sent word to every town that the old bridge would be built again "
         "before winter came with its long nights and cold rain over the hills where shepherds kept sheep").split()
ENTRY_FILES = ("tokenizer.json", "splits.json", *(f"{s}{x}" for s in SPLITS for x in (".bin", ".docs.npy")))


def write_jsonl(path: Path, megabytes: float, seed: int = 0) -> int:
    """Documents of 1-4 KB of English-like text, one JSON object per line; returns the file's size."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as out:
        while out.tell() < target:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 800)))
            out.write(json.dumps({"text": text.capitalize() + "."}) + "\n")
    return path.stat().st_size


def overrides(corpus: Path, cache: Path, *extra: str) -> list[str]:
    return ["data=local", f"data.paths=[{corpus}]", "data.vocab_size=512", "data.seq_len=64", f"cache_dir={cache}",
            "data.stream=true", "data.shard_bytes=200000", "data.tokenizer_sample_bytes=400000", *extra]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def prepare_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "arches.cli", "data", "prepare", *args]


def entry_of(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "corpora").iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    return entry


def entry_bytes(entry: Path) -> dict[str, bytes]:
    return {name: (entry / name).read_bytes() for name in ENTRY_FILES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stream_corpus")
    write_jsonl(folder / "corpus" / "part.jsonl", 3.0)
    return folder / "corpus"


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[str, bytes]:
    """The entry of an uninterrupted prepare at one process."""
    cache = tmp_path_factory.mktemp("stream_reference")
    prepare(compose(overrides(corpus, cache)))
    return entry_bytes(entry_of(cache))


def test_a_streamed_entry_splits_by_name_and_holds_every_document(corpus, tmp_path):
    prepared = prepare(compose(overrides(corpus, tmp_path / "cache")))

    stats = prepared.stats
    assert stats["layout"] == "stream-1" and stats["shards"] > 5 and stats["tokenizer_sampled_bytes"] <= 400000
    splits = prepared.splits()
    lines = (corpus / "part.jsonl").read_text().splitlines()
    assert sum(len(names) for names in splits.values()) == len(lines)
    for split, names in splits.items():
        assert all(split_of(name, 0.05, 0.05) == split for name in names)
        tokens, starts = prepared.tokens(split), prepared.doc_starts(split)
        assert len(starts) == len(names) == stats["splits"][split]["documents"] > 0
        eos = prepared.specials().eos
        ends = np.append(starts[1:], len(tokens)) - 1
        assert np.all(tokens[ends] == eos)  # every document ends with <eos>, where the next one starts
    # the first train document, tokenized alone, is the first stretch of the train array
    first = json.loads(lines[int(splits["train"][0].rsplit(":", 1)[1]) - 1])["text"]  # names: <file>:<line>
    ids = prepared.tokenizer().encode(first, add_special_tokens=False).ids
    assert prepared.tokens("train")[: len(ids)].tolist() == ids


def test_two_processes_write_the_same_entry_as_one(corpus, reference, tmp_path):
    prepare(compose(overrides(corpus, tmp_path / "cache", "data.num_proc=2")))
    assert entry_bytes(entry_of(tmp_path / "cache")) == reference


def killed_prepare(corpus: Path, cache: Path, shards_done: int = 3) -> Path:
    """A prepare SIGKILLed once `shards_done` shards are finished; its partial folder."""
    worker = subprocess.Popen(prepare_cmd(*overrides(corpus, cache)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env())
    deadline = time.time() + 240
    while time.time() < deadline:
        partials = list((cache / "corpora").glob("*.partial/shards")) if (cache / "corpora").exists() else []
        if partials and len(list(partials[0].glob("*.json"))) >= shards_done:
            break
        assert worker.poll() is None, "the prepare ended before it could be killed"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    (partial,) = (cache / "corpora").glob("*.partial")
    assert not any(entry_is_complete(p) for p in (cache / "corpora").iterdir())
    return partial


def test_a_sigkilled_prepare_continues_to_the_same_entry(corpus, reference, tmp_path):
    partial = killed_prepare(corpus, tmp_path / "cache")
    finished = sorted(p.name for p in (partial / "shards").glob("*.json"))
    before = {name: (partial / "shards" / name).stat().st_mtime_ns for name in finished}

    rerun = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache")), capture_output=True, text=True,
                           env=env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert entry_bytes(entry_of(tmp_path / "cache")) == reference
    assert not partial.exists() and before  # the finished shards were kept, not redone (their files moved on)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_damaged_shard_is_one_line_and_nothing_is_complete(damage, corpus, tmp_path):
    partial = killed_prepare(corpus, tmp_path / "cache")
    victim = sorted((partial / "shards").glob("*.train.bin"))[0]
    data = bytearray(victim.read_bytes())
    if damage == "corrupted":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    victim.write_bytes(bytes(data))

    result = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache")), capture_output=True, text=True,
                            env=env(), timeout=300)
    line = one_line(result)
    assert f"shard {victim.name[:6]}" in line and "truncated or corrupted" in line
    assert not any(entry_is_complete(p) for p in (tmp_path / "cache" / "corpora").iterdir())
    # as the line says: delete that shard's record and run again, which redoes it
    (partial / "shards" / f"{victim.name[:6]}.json").unlink()
    again = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache")), capture_output=True, text=True,
                           env=env(), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_full_disk_is_one_line_and_a_rerun_finishes(corpus, reference, tmp_path):
    def limit_file_size():  # the kernel refuses a write past 300 kB: what a full disk does to a writer
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    cache = tmp_path / "cache"
    result = subprocess.run(prepare_cmd(*overrides(corpus, cache)), capture_output=True, text=True, env=env(),
                            timeout=300, preexec_fn=limit_file_size)
    line = one_line(result)
    assert "is full" in line and "cache_dir" in line
    assert not any(entry_is_complete(p) for p in (cache / "corpora").iterdir())
    rerun = subprocess.run(prepare_cmd(*overrides(corpus, cache)), capture_output=True, text=True, env=env(),
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert entry_bytes(entry_of(cache)) == reference


def test_continuing_with_another_shard_size_is_one_line(corpus, tmp_path):
    killed_prepare(corpus, tmp_path / "cache")
    result = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache", "data.shard_bytes=300000")),
                            capture_output=True, text=True, env=env(), timeout=300)
    assert "data.shard_bytes=200000, not 300000" in one_line(result)


def test_a_streamed_row_without_its_text_is_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "a.jsonl", 0.3)
    with open(corpus / "a.jsonl", "a") as out:
        out.write(json.dumps({"body": "no text field here"}) + "\n")
    result = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache")), capture_output=True, text=True,
                            env=env(), timeout=300)
    assert "has no field 'text'" in one_line(result)
    assert not any(entry_is_complete(p) for p in (tmp_path / "cache" / "corpora").iterdir())


def peak_rss_bytes(command: list[str]) -> int:
    """The peak resident memory of one real subprocess (its own rusage, from wait4)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read().decode()[-2000:]
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def test_a_corpus_many_times_the_memory_it_is_prepared_in_trains(tmp_path):
    """A 40 MB corpus prepared with the memory above an idle prepare's held under a tenth of it
    (the in-memory path holds about 3x the corpus), then trained on for a few steps."""
    big = tmp_path / "big"
    size = write_jsonl(big / "big.jsonl", 40.0, seed=1)
    small = tmp_path / "small"
    write_jsonl(small / "small.jsonl", 0.5, seed=2)
    bounded = ["data.shard_bytes=1000000", "data.tokenizer_sample_bytes=1000000"]
    idle = peak_rss_bytes(prepare_cmd(*overrides(small, tmp_path / "cache-small", *bounded)))
    peak = peak_rss_bytes(prepare_cmd(*overrides(big, tmp_path / "cache", *bounded)))
    print(f"corpus {size / 1e6:.1f} MB, idle prepare {idle / 1e6:.0f} MB, this one {peak / 1e6:.0f} MB")
    assert peak - idle < size / 10, (peak, idle, size)

    trained = subprocess.run(
        [sys.executable, "-m", "arches.cli", "train", *overrides(big, tmp_path / "cache", *bounded), "size=debug",
         "trainer.max_steps=3", "train.micro_batch_size=2", "train.val_windows=2", f"results_dir={tmp_path / 'r'}"],
        capture_output=True, text=True, env=env(), timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    record = json.loads((Path(trained.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == 3


def test_the_embedded_default_keeps_its_cache_keys():
    # computed by arches at 566b159, before streaming existed: an existing cache stays valid;
    # a streamed entry of the same corpus is another entry
    from arches.data.cache import build_source, entry_key

    for overrides_, key in (([], "b8abfa0d42160cf6b2a7"), (["experiment=families"], "be505d88e89882e189a2")):
        cfg = compose(overrides_)
        source = build_source(cfg.data, "/nonexistent")
        assert entry_key(cfg.data, source, None) == key
        assert entry_key(compose([*overrides_, "data.stream=true"]).data, source, None) != key


def test_a_source_with_no_text_is_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "blank.jsonl").write_text("".join(json.dumps({"text": "  \n "}) + "\n" for _ in range(5)))
    result = subprocess.run(prepare_cmd(*overrides(corpus, tmp_path / "cache")), capture_output=True, text=True,
                            env=env(), timeout=300)
    assert "holds no text" in one_line(result)
    assert not any(entry_is_complete(p) for p in (tmp_path / "cache" / "corpora").iterdir())


def test_a_streamed_hf_dataset_is_prepared_without_holding_it(tmp_path, monkeypatch):
    # `datasets.load_dataset(..., streaming=True)` on a local folder: the hf path, offline
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    write_jsonl(tmp_path / "dataset" / "train.jsonl", 1.0)
    rows = (tmp_path / "dataset" / "train.jsonl").read_text().splitlines()
    cfg = compose(["data=hf", f"data.name={tmp_path / 'dataset'}", "data.streaming=true", "data.vocab_size=512",
                   "data.seq_len=64", f"cache_dir={tmp_path / 'cache'}", "data.stream=true",
                   "data.shard_bytes=200000", "data.tokenizer_sample_bytes=400000"])
    prepared = prepare(cfg)
    names = [name for split in SPLITS for name in prepared.splits()[split]]
    assert sorted(names, key=lambda n: int(n.rsplit("/", 1)[1])) == [
        f"{tmp_path / 'dataset'}/train/{i}" for i in range(len(rows))]
    assert prepared.stats["layout"] == "stream-1" and prepared.stats["shards"] >= 4


def test_the_new_data_keys_change_no_run_name_and_no_old_run_folder():
    # run names computed by arches at 566b159, before data.stream and its keys existed: the same
    # command still finds its run folder, and a config saved then still resumes
    from arches.config import to_container
    from arches.train.resume import config_differences, run_name

    assert run_name(compose([])) == "gpt-tiny-classics-seed0-3eb1f913"
    assert run_name(compose(["arch=gpt", "size=debug", "data=local", "data.paths=[x]"])) == \
        "gpt-debug-local-seed0-ba1ddf45"
    saved = to_container(compose([]))
    for key in ("stream", "num_proc", "shard_bytes", "tokenizer_sample_bytes"):
        saved["data"].pop(key)
    assert config_differences(saved, to_container(compose(["data.num_proc=2"]))) is None
    assert "data.stream=(unset) there, True here" in config_differences(saved, to_container(compose(["data.stream=true"])))
    assert run_name(compose(["data.stream=true"])) != "gpt-tiny-classics-seed0-3eb1f913"
