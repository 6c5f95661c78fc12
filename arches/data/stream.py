"""Streaming preparation (`data.stream=true`): a corpus larger than memory into a cache entry.

The in-memory path (arches.data.cache.build_entry) reads every document into a list, splits
the sorted list and trains the tokenizer on a copy of the train split: about 3x the corpus in
memory. Here documents flow through twice, in bounded memory:

1. the split of each document is a stable hash of its name (no global list, the same on every
   machine), and the tokenizer trains on a seeded sample of the train split's pieces, bounded
   by `data.tokenizer_sample_bytes` (the pieces whose seeded hash is smallest: the same sample
   whatever the order or the number of processes);
2. documents are cut into shards of about `data.shard_bytes` characters in source order,
   tokenized by `data.num_proc` processes (arches.data.shards), each shard checked by its
   sha256 and concatenated into the split's one flat array, which training memory-maps as it
   does every entry (so the windows, their resume and the document masks are unchanged).

The work lives in `<key>.partial/` beside the entry: a killed prepare keeps its tokenizer and
finished shards, and a rerun does only the rest. The entry is renamed into place only when
every shard is written and checked.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from arches.data.shards import ShardJob, check_shard, concatenate, read_shard
from arches.data.sources import CACHE_VERSION, CorpusSource, sha256_hex
from arches.data.splits import SPLITS, text_pieces
from arches.data.tokenizer import Specials, load_tokenizer, tokenizer_hash, train_tokenizer
from arches.errors import UserError

LAYOUT = "stream-1"
SAMPLE_SEED = 0  # the tokenizer sample's seed, recorded in stats.json
FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def split_of(name: str, val_fraction: float, test_fraction: float) -> str:
    """A document's split from the hash of its name alone: test below test_fraction, then val."""
    where = int(sha256_hex(name)[:16], 16) / 2**64
    if where < test_fraction:
        return "test"
    return "val" if where < test_fraction + val_fraction else "train"


def layout_settings(data_cfg: Any, tokenizer_file: Path | None) -> dict:
    """What a streamed entry's content depends on beyond the corpus and vocabulary (its cache key)."""
    sample = None if tokenizer_file else int(data_cfg.get("tokenizer_sample_bytes"))
    return {"layout": LAYOUT, "tokenizer_sample_bytes": sample, "sample_seed": SAMPLE_SEED}


def _fractions(data_cfg: Any) -> tuple[float, float]:
    return float(data_cfg.get("val_fraction", 0.05)), float(data_cfg.get("test_fraction", 0.05))


def tokenizer_sample(source: CorpusSource, data_cfg: Any) -> tuple[list[str], int]:
    """The train split's pieces with the smallest seeded hashes, up to the byte budget, and their bytes."""
    budget = int(data_cfg.get("tokenizer_sample_bytes"))
    val, test = _fractions(data_cfg)
    kept: list[tuple[int, int, str]] = []  # a max-heap on the priority: (-priority, bytes, piece)
    total = 0
    for document in source.iter_documents():
        if split_of(document.name, val, test) != "train":
            continue
        for index, piece in enumerate(text_pieces(document.text)):
            priority = int(sha256_hex(f"{SAMPLE_SEED}:{document.name}:{index}")[:16], 16)
            if kept and total >= budget and priority > -kept[0][0]:
                continue  # it would be the first to go
            size = len(piece.encode("utf-8"))
            heapq.heappush(kept, (-priority, size, piece))
            total += size
            while total > budget and len(kept) > 1:
                _, dropped, _ = heapq.heappop(kept)
                total -= dropped
    if not kept:
        raise UserError("the corpus has no train documents; add documents or lower data.val_fraction and "
                        "data.test_fraction")
    return [piece for _, _, piece in sorted(kept, reverse=True)], total


def shard_jobs(source: CorpusSource, data_cfg: Any) -> Iterator[ShardJob]:
    """The corpus in shards of about data.shard_bytes characters, in source order."""
    limit = int(data_cfg.get("shard_bytes"))
    val, test = _fractions(data_cfg)
    documents: dict[str, list] = {split: [] for split in SPLITS}
    size = index = 0
    for document in source.iter_documents():
        documents[split_of(document.name, val, test)].append((document.name, document.text, document.replaced_bytes))
        size += len(document.text)
        if size >= limit:
            yield ShardJob(index, documents)
            documents, size, index = {split: [] for split in SPLITS}, 0, index + 1
    if size:
        yield ShardJob(index, documents)


@contextmanager
def _locked(folder: Path):
    """One prepare at a time on a partial entry (another waits, then finds the entry done)."""
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _partial_tokenizer(partial: Path, source: CorpusSource, data_cfg: Any, tokenizer_file: Path | None, console):
    """The entry's tokenizer: kept from an earlier, killed prepare, else given or trained now."""
    path = partial / "tokenizer.json"
    if path.is_file():
        return load_tokenizer(path), json.loads((partial / "sample.json").read_text())["bytes"]
    sampled = None
    if tokenizer_file is not None:
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        vocab_size = int(data_cfg.get("vocab_size", 8192))
        with console.status("sampling the train split for the tokenizer"):
            pieces, sampled = tokenizer_sample(source, data_cfg)
        with console.status(f"training the tokenizer (vocab {vocab_size}) on {sampled:,} bytes of the train split"):
            tokenizer = train_tokenizer(iter(pieces), vocab_size, length=len(pieces))
        del pieces
    (partial / "sample.json").write_text(json.dumps({"bytes": sampled}))
    temp = partial / "tokenizer.json.tmp"
    tokenizer.save(str(temp))
    os.replace(temp, path)  # last: a kill before this trains it again
    return tokenizer, sampled


def _check_manifest(partial: Path, settings: dict) -> None:
    manifest = partial / "manifest.json"
    if manifest.is_file():
        before = json.loads(manifest.read_text())
        if before != settings:
            differs = next(key for key in settings if before.get(key) != settings[key])
            raise UserError(f"{partial} was begun with data.{differs}={before.get(differs)}, not {settings[differs]}; "
                            f"use the same value to continue it, or delete that folder to start over")
    else:
        manifest.write_text(json.dumps(settings))


def build_streamed_entry(source: CorpusSource, data_cfg: Any, entry: Path, tokenizer_file: Path | None):
    """Build `entry` by streaming (module docstring); a full disk is one line, the partial kept."""
    from arches.data.cache import _console, check_windows, entry_is_complete, load_entry

    partial = entry.parent / f"{entry.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(partial):
            if entry_is_complete(entry):  # another prepare finished it while this one waited
                if [p.name for p in partial.iterdir()] == [".lock"]:
                    shutil.rmtree(partial, ignore_errors=True)
                return load_entry(entry, cache_hit=True)
            return _build(source, data_cfg, entry, partial, tokenizer_file, _console(), check_windows, load_entry)
    except OSError as error:
        if error.errno in FULL_DISK:
            raise UserError(f"the disk of {entry.parent} is full ({error.strerror}) while preparing the corpus; free "
                            f"space or set cache_dir to a larger disk, and run again: it continues from the "
                            f"finished shards") from None
        raise


def _build(source, data_cfg, entry: Path, partial: Path, tokenizer_file, console, check_windows, load_entry):
    from arches.data.workers import run_shards

    settings = {"shard_bytes": int(data_cfg.get("shard_bytes")), "val_fraction": _fractions(data_cfg)[0],
                "test_fraction": _fractions(data_cfg)[1], "key": entry.name}
    _check_manifest(partial, settings)
    started = time.perf_counter()
    tokenizer, sampled = _partial_tokenizer(partial, source, data_cfg, tokenizer_file, console)
    tokenizer_seconds = time.perf_counter() - started
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
    shards = partial / "shards"
    shards.mkdir(exist_ok=True)

    started = time.perf_counter()
    num_proc = int(data_cfg.get("num_proc", 1))
    count = run_shards(shard_jobs(source, data_cfg), shards, str(partial / "tokenizer.json"), dtype.name,
                       Specials.from_tokenizer(tokenizer).eos, num_proc, source.total_bytes(), console)
    tokenize_seconds = time.perf_counter() - started
    if count == 0:
        raise UserError("the corpus is empty; point data at some text")
    summaries = [read_shard(shards, index) for index in range(count)]
    for summary in summaries:  # every shard checked before anything is marked complete
        check_shard(shards, summary)
    split_stats = {split: {key: sum(s["splits"][split][key] for s in summaries)
                           for key in ("documents", "bytes", "tokens", "replaced_bytes")} for split in SPLITS}
    total_tokens = sum(s["tokens"] for s in split_stats.values())
    stats = {
        "source": data_cfg.get("source"), "key": entry.name, "vocab_size": vocab_size,
        "requested_vocab_size": None if tokenizer_file else int(data_cfg.get("vocab_size", 8192)),
        "dtype": dtype.name, "tokenizer_hash": tokenizer_hash(tokenizer), "splits": split_stats,
        "characters": sum(s["splits"][split]["characters"] for s in summaries for split in SPLITS), "layout": LAYOUT, "shards": count, "shard_bytes": settings["shard_bytes"],
        "num_proc": num_proc, "tokenizer_sample_bytes": layout_settings(data_cfg, tokenizer_file)[
            "tokenizer_sample_bytes"], "tokenizer_sampled_bytes": sampled, "sample_seed": SAMPLE_SEED,
        "tokenizer_seconds": round(tokenizer_seconds, 3), "tokenize_seconds": round(tokenize_seconds, 3),
        "tokens_per_second": round(total_tokens / max(tokenize_seconds, 1e-9)), "cache_version": CACHE_VERSION,
    }
    check_windows(stats, data_cfg.get("seq_len", 256))
    _assemble(shards, count, partial, dtype)
    (partial / "stats.json").write_text(json.dumps(stats, indent=1))  # last: marks the entry complete
    shutil.rmtree(shards)
    for name in ("manifest.json", "sample.json"):
        (partial / name).unlink()
    os.replace(partial, entry)
    (entry / ".lock").unlink(missing_ok=True)
    prepared = load_entry(entry, cache_hit=False)
    prepared._tokenizer = tokenizer
    return prepared


def _assemble(shards: Path, count: int, partial: Path, dtype: np.dtype) -> None:
    """Each split's flat array, document offsets and names (splits.json, written as it goes)."""
    with open(partial / "splits.json.tmp", "w", encoding="utf-8") as names:
        names.write("{")
        for position, split in enumerate(SPLITS):
            names.write(f'{", " if position else ""}"{split}": [')
            first = [True]

            def write_names(batch: list[str], first=first) -> None:
                for name in batch:
                    names.write(("" if first[0] else ", ") + json.dumps(name, ensure_ascii=False))
                    first[0] = False

            starts = concatenate(shards, count, split, partial / f"{split}.bin", dtype, write_names)
            np.save(partial / f"{split}.docs.npy", starts)
            names.write("]")
        names.write("}\n")
    os.replace(partial / "splits.json.tmp", partial / "splits.json")
