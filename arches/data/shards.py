"""Token shards of a streamed cache entry: one shard is a run of documents in source order,
tokenized into a flat array per split, written with its checksum, and later concatenated.

A shard is `<partial>/shards/<index>.<split>.bin` and `.docs.npy` per split, and
`<index>.json`, written last, which marks it finished and holds each file's sha256, its
counts and its documents' names. Shard boundaries come from the source order and
`data.shard_bytes` only, never from the number of processes, so `data.num_proc=2` writes the
same shards as 1, and a rerun after a kill keeps the finished ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arches.data.splits import SPLITS, tokenize_split
from arches.errors import UserError
from arches.train.run_folder import file_sha256

CHUNK = 1 << 20  # bytes per read when hashing or concatenating: bounded memory


@dataclass
class ShardJob:
    """One shard to tokenize: its documents as (name, text, replaced bytes), per split."""

    index: int
    documents: dict  # split -> list of (name, text, replaced_bytes)

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


def shard_done(folder: Path, index: int) -> bool:
    return (folder / f"{index:06d}.json").is_file()


_TOKENIZERS: dict = {}


def _tokenizer(path: str):
    """A worker's tokenizer, loaded once per process."""
    if path not in _TOKENIZERS:
        from arches.data.tokenizer import load_tokenizer

        _TOKENIZERS[path] = load_tokenizer(Path(path))
    return _TOKENIZERS[path]


def write_shard(job: ShardJob, folder: str, tokenizer_path: str, dtype_name: str, eos: int) -> dict:
    """Tokenize one shard into `folder` (each file to a temp name, renamed when written), its
    json last; return the json's summary. Runs in a worker process or in the main one."""
    from arches.data.sources import Document

    folder_path, dtype = Path(folder), np.dtype(dtype_name)
    tokenizer = _tokenizer(tokenizer_path)
    summary = {"index": job.index, "dtype": dtype.name, "splits": {}}
    for split in SPLITS:
        documents = [Document(name, text, replaced) for name, text, replaced in job.documents.get(split, [])]
        bin_path = folder_path / f"{job.name}.{split}.bin"
        temp_bin = bin_path.with_suffix(".bin.tmp")
        starts = tokenize_split(tokenizer, documents, temp_bin, dtype, eos, lambda _chars: None)
        temp_docs = folder_path / f"{job.name}.{split}.docs.tmp.npy"
        np.save(temp_docs, starts)
        os.replace(temp_bin, bin_path)
        docs_path = folder_path / f"{job.name}.{split}.docs.npy"
        os.replace(temp_docs, docs_path)
        summary["splits"][split] = {
            "documents": len(documents),
            "bytes": sum(len(d.text.encode("utf-8")) for d in documents),
            "characters": sum(len(d.text) for d in documents),
            "tokens": bin_path.stat().st_size // dtype.itemsize,
            "replaced_bytes": sum(d.replaced_bytes for d in documents),
            "names": [d.name for d in documents],
            "sha256": file_sha256(bin_path),
            "docs_sha256": file_sha256(docs_path),
        }
    temp_json = folder_path / f"{job.name}.json.tmp"
    temp_json.write_text(json.dumps(summary))
    os.replace(temp_json, folder_path / f"{job.name}.json")
    return summary


def read_shard(folder: Path, index: int) -> dict:
    return json.loads((folder / f"{index:06d}.json").read_text())


def check_shard(folder: Path, summary: dict) -> None:
    """Every file of a finished shard is there and matches its checksum; one line if not."""
    name = f"{summary['index']:06d}"
    for split in SPLITS:
        for suffix, key in ((".bin", "sha256"), (".docs.npy", "docs_sha256")):
            path = folder / f"{name}.{split}{suffix}"
            if not path.is_file() or file_sha256(path) != summary["splits"][split][key]:
                what = "is missing" if not path.is_file() else "is truncated or corrupted (its sha256 does not match)"
                raise UserError(
                    f"shard {name} of {folder.parent} {what}: {path.name}; delete {folder / (name + '.json')} "
                    f"and run `arches data prepare` again, which redoes only that shard"
                )


def concatenate(folder: Path, count: int, split: str, out: Path, dtype: np.dtype, names_out) -> np.ndarray:
    """Write the split's flat array from its shards, in order, with bounded memory; write its
    documents' names through `names_out(list)`, shard by shard; return their start offsets."""
    starts, offset = [], 0
    with open(out, "wb") as sink:
        for index in range(count):
            name = f"{index:06d}"
            with open(folder / f"{name}.{split}.bin", "rb") as source:
                while block := source.read(CHUNK):
                    sink.write(block)
            starts.append(np.load(folder / f"{name}.{split}.docs.npy") + offset)
            offset += (folder / f"{name}.{split}.bin").stat().st_size // dtype.itemsize
            names_out(read_shard(folder, index)["splits"][split]["names"])
    return (np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)).astype(np.int64)
