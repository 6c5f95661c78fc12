"""The corpus cache: `prepare(cfg)` builds or reuses one entry per corpus and tokenizer config.

An entry lives under `<cache_dir>/corpora/<key>/`, where the key hashes the corpus
content and the tokenizer config. It is built in a temp folder that is renamed into
place only when complete, and holds the tokenizer and each split's flat token array
(`PreparedData` reads them). No torch here: a cached `arches data prepare` stays well
under 2 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from arches.data.classics import ClassicsSource
from arches.data.hf import HFSource
from arches.data.local import LocalSource
from arches.data.sources import CACHE_VERSION, CorpusSource, Document, sha256_hex
from arches.data.splits import SPLITS, split_documents, text_pieces, tokenize_split, unique_names
from arches.data.stream import build_streamed_entry, layout_settings
from arches.data.tokenizer import Specials, load_tokenizer, tokenizer_hash, train_tokenizer
from arches.errors import UserError, unknown

SOURCES = ("classics", "local", "hf")
ENTRY_FILES = ("tokenizer.json", "splits.json", "stats.json") + tuple(
    f"{split}{suffix}" for split in SPLITS for suffix in (".bin", ".docs.npy")
)


def build_source(data_cfg: Any, cache_dir: str | Path) -> CorpusSource:
    """The corpus source named by `data.source`."""
    source = data_cfg.get("source")
    if source == "classics":
        return ClassicsSource(Path(cache_dir).expanduser() / "downloads")
    if source == "local":
        return LocalSource(list(data_cfg.get("paths") or []), data_cfg.get("text_field", "text"))
    if source == "hf":
        return HFSource(
            data_cfg.get("name"),
            data_cfg.get("config_name"),
            data_cfg.get("split", "train"),
            data_cfg.get("text_field", "text"),
            bool(data_cfg.get("streaming", False)),
            data_cfg.get("max_documents"),
            data_cfg.get("revision"),
        )
    raise unknown("data source", source, SOURCES)


@dataclass
class PreparedData:
    """A complete cache entry: the tokenizer and each split's flat token array."""

    cache_dir: Path
    tokenizer_path: Path
    tokenizer_hash: str
    vocab_size: int
    stats: dict
    cache_hit: bool
    _tokenizer: Tokenizer | None = field(default=None, repr=False, compare=False)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.stats["dtype"])

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    def specials(self) -> Specials:
        return Specials.from_tokenizer(self.tokenizer())

    def tokens(self, split: str) -> np.ndarray:
        """The split's flat token array, memory-mapped read-only."""
        path = self.cache_dir / f"{_check_split(split)}.bin"
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def doc_starts(self, split: str) -> np.ndarray:
        """Offsets of each document's first token in `tokens(split)`."""
        return np.load(self.cache_dir / f"{_check_split(split)}.docs.npy")

    def splits(self) -> dict[str, list[str]]:
        return json.loads((self.cache_dir / "splits.json").read_text())


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return split


def cache_key(content_hash: str, vocab_size: int | None, tokenizer_file_hash: str | None,
              val_fraction: float, test_fraction: float, layout: dict | None = None) -> str:  # fmt: skip
    """The entry's key. `layout`: a streamed entry's own settings (arches.data.stream); absent
    for the in-memory layout, so its keys, the embedded default's included, never change."""
    spec = {
        "version": CACHE_VERSION,
        "corpus": content_hash,
        # a given tokenizer fixes the vocabulary; vocab_size then does not matter
        "vocab_size": None if tokenizer_file_hash else int(vocab_size),
        "tokenizer": tokenizer_file_hash,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
    }
    if layout is not None:
        spec["layout"] = layout
    return sha256_hex(json.dumps(spec, sort_keys=True))[:20]


def entry_is_complete(entry: Path) -> bool:
    return entry.is_dir() and all((entry / name).is_file() for name in ENTRY_FILES)


_TEMP = re.compile(r"^(?P<key>[0-9a-f]+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(corpora: Path, key: str) -> list[Path]:
    """Delete temp folders of `key` left by killed processes (those of live processes stay)."""
    removed = []
    if not corpora.is_dir():
        return removed
    host = socket.gethostname()
    for folder in corpora.iterdir():
        match = _TEMP.match(folder.name)
        if not match or match["key"] != key:
            continue
        if match["host"] == host:
            stale = not _pid_alive(int(match["pid"]))
        else:  # another machine on a shared cache: only when clearly abandoned
            stale = time.time() - folder.stat().st_mtime > 24 * 3600
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def check_windows(stats: dict, seq_len: int) -> None:
    """Every split in use must hold at least one training window (seq_len + 1 tokens)."""
    window = int(seq_len) + 1
    for split in SPLITS:
        split_stats = stats["splits"][split]
        if split_stats["documents"] == 0 and split != "train":
            continue  # a held-out fraction of 0 asks for no such split
        if split_stats["tokens"] < window:
            hint = "lower data.seq_len or add text" if split == "train" else (
                f"lower data.seq_len, raise data.{split}_fraction or add text"
            )  # fmt: skip
            raise UserError(
                f"the {split} split has {split_stats['tokens']} tokens ({split_stats['documents']} document(s)), "
                f"fewer than one training window of data.seq_len+1 = {window}; {hint}"
            )


def _console():
    from rich.console import Console

    return Console(stderr=True)


def build_entry(source: CorpusSource, data_cfg: Any, entry: Path, tokenizer_file: Path | None) -> PreparedData:
    """Build the cache entry in a temp folder beside `entry`, then rename it into place."""
    console = _console()
    started = time.perf_counter()
    with console.status("reading the corpus"):
        documents = source.documents()
    if not documents:
        raise UserError("the corpus is empty; point data at some text")
    by_name = unique_names(documents)
    splits = split_documents(list(by_name), data_cfg.get("val_fraction", 0.05), data_cfg.get("test_fraction", 0.05))
    split_docs = {split: [by_name[name] for name in names] for split, names in splits.items()}
    read_seconds = time.perf_counter() - started

    started = time.perf_counter()
    tokenizer = _entry_tokenizer(split_docs["train"], data_cfg, tokenizer_file, console)
    specials = Specials.from_tokenizer(tokenizer)
    tokenizer_seconds = time.perf_counter() - started
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)

    entry.parent.mkdir(parents=True, exist_ok=True)
    temp = entry.parent / f"{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        started = time.perf_counter()
        split_stats = _tokenize_splits(tokenizer, split_docs, temp, dtype, specials.eos, console)
        tokenize_seconds = time.perf_counter() - started
        total_tokens = sum(s["tokens"] for s in split_stats.values())
        stats = {
            "source": data_cfg.get("source"),
            "key": entry.name,
            "vocab_size": vocab_size,
            "requested_vocab_size": None if tokenizer_file else int(data_cfg.get("vocab_size", 8192)),
            "dtype": dtype.name,
            "tokenizer_hash": tokenizer_hash(tokenizer),
            "splits": split_stats,
            "characters": sum(len(d.text) for d in documents),
            "read_seconds": round(read_seconds, 3),
            "tokenizer_seconds": round(tokenizer_seconds, 3),
            "tokenize_seconds": round(tokenize_seconds, 3),
            "tokens_per_second": round(total_tokens / max(tokenize_seconds, 1e-9)),
            "cache_version": CACHE_VERSION,
        }
        check_windows(stats, data_cfg.get("seq_len", 256))
        tokenizer.save(str(temp / "tokenizer.json"))
        (temp / "splits.json").write_text(json.dumps(splits, indent=1, ensure_ascii=False))
        (temp / "stats.json").write_text(json.dumps(stats, indent=1))  # last: marks the entry complete
        try:
            os.replace(temp, entry)
        except OSError:
            if not entry_is_complete(entry):
                raise
            shutil.rmtree(temp, ignore_errors=True)  # another process finished the same entry first
            return load_entry(entry, cache_hit=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    prepared = load_entry(entry, cache_hit=False)
    prepared._tokenizer = tokenizer
    return prepared


def _entry_tokenizer(train_docs: list[Document], data_cfg: Any, tokenizer_file: Path | None, console) -> Tokenizer:
    """The given tokenizer file, else a byte-level BPE trained on the train split's text pieces."""
    if tokenizer_file is not None:
        return load_tokenizer(tokenizer_file)
    train_pieces = [piece for document in train_docs for piece in text_pieces(document.text)]
    vocab_size = int(data_cfg.get("vocab_size", 8192))
    with console.status(f"training the tokenizer (vocab {vocab_size}) on the train split"):
        return train_tokenizer(iter(train_pieces), vocab_size, length=len(train_pieces))


def _tokenize_splits(tokenizer: Tokenizer, split_docs: dict[str, list[Document]], folder: Path, dtype: np.dtype,
                     eos: int, console) -> dict[str, dict]:  # fmt: skip
    """Write each split's `.bin` and `.docs.npy` into `folder`, with a progress bar; return each split's stats."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    split_stats = {}
    columns = (TextColumn("tokenizing {task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for split in SPLITS:
            task = progress.add_task(split, total=sum(len(d.text) for d in split_docs[split]) or 1)
            starts = tokenize_split(
                tokenizer, split_docs[split], folder / f"{split}.bin", dtype, eos,
                lambda chars, task=task: progress.advance(task, chars),
            )  # fmt: skip
            np.save(folder / f"{split}.docs.npy", starts)
            split_stats[split] = {
                "documents": len(split_docs[split]),
                "bytes": sum(len(d.text.encode("utf-8")) for d in split_docs[split]),
                "tokens": (folder / f"{split}.bin").stat().st_size // dtype.itemsize,
                "replaced_bytes": sum(d.replaced_bytes for d in split_docs[split]),
            }
    return split_stats


def load_entry(entry: Path, cache_hit: bool) -> PreparedData:
    stats = json.loads((entry / "stats.json").read_text())
    return PreparedData(
        cache_dir=entry,
        tokenizer_path=entry / "tokenizer.json",
        tokenizer_hash=stats["tokenizer_hash"],
        vocab_size=int(stats["vocab_size"]),
        stats=stats,
        cache_hit=cache_hit,
    )


def _check_data_cfg(data_cfg: Any) -> None:
    """Every data setting's type and range, and its source's rules (arches.settings' table)."""
    from arches.settings import check_data_section

    check_data_section(data_cfg)


def entry_key(data_cfg: Any, source: CorpusSource, tokenizer_file: Path | None) -> str:
    """The cache key of the entry `prepare` builds for these data settings."""
    return cache_key(
        source.content_hash(),
        data_cfg.get("vocab_size", 8192),
        tokenizer_hash(tokenizer_file) if tokenizer_file else None,
        data_cfg.get("val_fraction", 0.05),
        data_cfg.get("test_fraction", 0.05),
        layout_settings(data_cfg, tokenizer_file) if data_cfg.get("stream") else None,
    )


def prepare(cfg: Any) -> PreparedData:
    """Build or reuse the cache entry for `cfg.data` under `cfg.cache_dir` (the root config)."""
    data_cfg = cfg.data
    _check_data_cfg(data_cfg)
    cache_root = Path(str(cfg.cache_dir)).expanduser()
    source = build_source(data_cfg, cache_root)
    tokenizer_file = None
    if data_cfg.get("tokenizer_path"):
        tokenizer_file = Path(str(data_cfg.tokenizer_path)).expanduser()
        if not tokenizer_file.is_absolute():
            tokenizer_file = Path.cwd() / tokenizer_file
    key = entry_key(data_cfg, source, tokenizer_file)
    corpora = cache_root / "corpora"
    entry = corpora / key
    for folder in remove_stale_temps(corpora, key):
        _console().print(f"removed {folder}, left half-written by a killed process; rebuilding")
    if entry_is_complete(entry):
        prepared = load_entry(entry, cache_hit=True)
        check_windows(prepared.stats, data_cfg.get("seq_len", 256))
        return prepared
    if entry.exists():  # incomplete (damaged by hand): never trusted
        shutil.rmtree(entry)
    if data_cfg.get("stream"):  # bounded memory, shards, processes; resumable (<key>.partial/)
        return build_streamed_entry(source, data_cfg, entry, tokenizer_file)
    return build_entry(source, data_cfg, entry, tokenizer_file)
