"""Tokenizing on many machines with datatrove (`pip install arches[datatrove]`), into a cache entry.

One machine: `data.stream=true data.num_proc=N` (arches.data.stream). Beyond one machine, the
same documents go through a datatrove pipeline, whose `LocalPipelineExecutor` runs it here and
`SlurmPipelineExecutor` on a cluster (one task per array job, failed tasks rerun, completed
ones skipped):

    from arches.config import compose
    from arches.data.engine import engine_pipeline, entry_from_engine
    cfg = compose(["data=local", "data.paths=[corpus/]", "cache_dir=/shared/cache"])
    engine_pipeline(cfg, "tokenizer.json", "/shared/tokens", "slurm", tasks=64,
                    time="2:00:00", partition="cpu").run()
    entry_from_engine("/shared/tokens")  # then: arches train ... data.stream=true data.tokenizer_path=tokenizer.json

(The local executor starts its workers by forkserver: in a script, call it under
`if __name__ == "__main__":`.)

The tokenizer is trained beforehand by arches (e.g. the tokenizer.json of a streamed entry
built on a sample). Each document keeps arches' name and goes to the split `split_of` gives
it; each task takes a contiguous run of the files, so the tasks' outputs, concatenated in rank
order, are the documents in source order: the entry equals, file for file, the one that
`data.stream=true` with the same tokenizer builds, whatever `tasks` is, and it is written where
`arches train` with those settings looks for it (its cache key).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import shutil
import socket
import time
import uuid
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document as EngineDocument
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.tokens.tokenizer import TokenizedFile
from datatrove.utils.tokenization import PipelineStepWithTokenizer

from arches.data.cache import PreparedData, build_source, entry_key, load_entry
from arches.data.local import LocalSource
from arches.data.sources import CACHE_VERSION
from arches.data.splits import SPLITS, text_pieces
from arches.data.stream import split_of
from arches.data.tokenizer import Specials, load_tokenizer, tokenizer_hash
from arches.errors import UserError, unknown

LAYOUT = "datatrove-1"
MANIFEST = "arches_engine.json"
EXECUTORS = ("local", "slurm")
COUNTS = ("documents", "bytes", "characters", "tokens", "replaced_bytes")
BATCH_CHARS = 1 << 20  # characters per encode_batch call, as arches.data.splits.tokenize_split
CHUNK = 1 << 20  # document ends or bytes per read when concatenating: bounded memory


def file_blocks(sizes: list[int], tasks: int) -> list[tuple[int, int]]:
    """Task r's files are [start, stop): contiguous runs of about equal bytes (some may be empty)."""
    offsets = np.cumsum([0, *sizes[:-1]]).tolist() if sizes else []
    total = sum(sizes)
    bounds = [0] + [bisect.bisect_left(offsets, rank * total / tasks) for rank in range(1, tasks)] + [len(sizes)]
    return list(itertools.pairwise(bounds))


class ArchesLocalReader(PipelineStep):
    """`data=local`'s documents under arches' names (`<file>:<line>`, a .txt file's name), each
    with its split in `metadata["split"]`; task `rank` reads its block of files in order."""

    name = "📖 arches local"
    type = "📖 - READER"

    def __init__(self, files: list[tuple[str, str]], blocks: list[tuple[int, int]], text_field: str,
                 val_fraction: float, test_fraction: float):  # fmt: skip
        super().__init__()
        self.files, self.blocks, self.text_field = files, blocks, text_field
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if world_size != len(self.blocks):
            raise UserError(f"the pipeline was built for {len(self.blocks)} tasks, not {world_size}; rebuild it")
        start, stop = self.blocks[rank]
        source = LocalSource([], self.text_field)  # its reader, one file at a time (as iter_documents)
        for name, path in self.files[start:stop]:
            for document in source.file_documents(name, Path(path)):
                split = split_of(document.name, self.val_fraction, self.test_fraction)
                self.stat_update(split)
                yield EngineDocument(text=document.text, id=document.name,
                                     metadata={"split": split, "replaced_bytes": document.replaced_bytes})


class ArchesSplitTokenizer(PipelineStepWithTokenizer):
    """Arches' tokens of each document then `<eos>`, into datatrove's tokenized files per split:
    `<split>/<rank>.ds` (tokens), `.ds.index` (uint64 document ends), `.names.jsonl`, and
    `<rank>.json` last (the task's counts: it marks the task finished)."""

    name = "✍️ arches tokens"
    type = "🔢 - TOKENIZER"

    def __init__(self, output_folder: str, tokenizer_path: str):
        super().__init__(tokenizer_path)
        self.output_folder = output_folder

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_name_or_path)  # text_only: a literal "<eos>" in text is text

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = get_datafolder(self.output_folder)
        dtype = np.dtype("<u4" if self.token_size == 4 else "<u2")
        eos = Specials.from_tokenizer(self.tokenizer).eos
        started = time.perf_counter()
        files = {split: TokenizedFile(folder, f"{split}/{rank:05d}.ds", token_size=self.token_size,
                                      tokenizer_name_or_path=self.tokenizer_name_or_path, save_final_metadata=True)
                 for split in SPLITS}  # fmt: skip
        names = {split: folder.open(f"{split}/{rank:05d}.names.jsonl", "wt") for split in SPLITS}
        counts = {split: dict.fromkeys(COUNTS, 0) for split in SPLITS}
        batch: list[EngineDocument] = []

        def flush() -> None:
            pieces = [text_pieces(document.text) for document in batch]
            # arches' own way (arches.data.splits.tokenize_split): pieces cut where the encoding is unchanged
            encodings = iter(self.tokenizer.encode_batch([p for each in pieces for p in each],
                                                         add_special_tokens=False))  # fmt: skip
            for document, its_pieces in zip(batch, pieces, strict=True):
                ids = [i for _ in its_pieces for i in next(encodings).ids] + [eos]
                split = document.metadata["split"]
                files[split].write_bytes(np.asarray(ids, dtype=dtype).tobytes())
                names[split].write(json.dumps(document.id, ensure_ascii=False) + "\n")
                values = (1, len(document.text.encode("utf-8")), len(document.text), len(ids),
                          document.metadata["replaced_bytes"])  # fmt: skip
                for key, value in zip(COUNTS, values, strict=True):
                    counts[split][key] += value
                self.stat_update("tokens", value=len(ids))
            batch.clear()

        chars = 0
        for document in data or ():
            batch.append(document)
            chars += len(document.text)
            if chars >= BATCH_CHARS:
                flush()
                chars = 0
        flush()
        for split in SPLITS:
            files[split].close()
            names[split].close()
        summary = {"rank": rank, "tasks": world_size, "dtype": dtype.name, "splits": counts,
                   "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
        with folder.open(f"{rank:05d}.json", "wt") as out:
            out.write(json.dumps(summary))


def engine_pipeline(cfg: Any, tokenizer_path: str | Path, output_dir: str | Path, executor: str = "local",
                    tasks: int = 1, workers: int = 1, logging_dir: str | Path | None = None,
                    **executor_options):  # fmt: skip
    """The datatrove executor (call `.run()`) that tokenizes `cfg.data`'s corpus (data=local) into
    `output_dir` in `tasks` tasks, `workers` at a time. executor="slurm" needs datatrove's
    SlurmPipelineExecutor options (time, partition, ...) in `executor_options`; both skip tasks
    that finished in `logging_dir` (default `<output_dir>/logs`), so a rerun does only the rest."""
    data_cfg = cfg.data
    if data_cfg.get("source") != "local":
        raise UserError(f"the datatrove engine reads data=local only, not data={data_cfg.get('source')}; "
                        "use data.stream=true data.num_proc=N for it")
    if executor not in EXECUTORS:
        raise unknown("executor", executor, EXECUTORS)
    if int(tasks) < 1 or int(workers) < 1:
        raise UserError(f"tasks={tasks} and workers={workers} must be positive integers")
    tokenizer_path = Path(tokenizer_path).expanduser().resolve()
    source = build_source(data_cfg, cfg.cache_dir)
    files = [(name, str(file)) for name, file in source.files()]
    blocks = file_blocks([Path(file).stat().st_size for _, file in files], int(tasks))
    val, test = float(data_cfg.get("val_fraction", 0.05)), float(data_cfg.get("test_fraction", 0.05))
    output = Path(output_dir).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    streamed = {**dict(data_cfg.items()), "stream": True, "tokenizer_path": str(tokenizer_path)}
    entry = Path(str(cfg.cache_dir)).expanduser().resolve() / "corpora" / entry_key(streamed, source, tokenizer_path)
    manifest = {"layout": LAYOUT, "engine": "datatrove", "engine_version": version("datatrove"), "tasks": int(tasks),
                "files": [name for name, _ in files], "blocks": blocks, "val_fraction": val, "test_fraction": test,
                "tokenizer_path": str(tokenizer_path), "tokenizer_hash": tokenizer_hash(tokenizer_path),
                "entry": str(entry)}  # fmt: skip
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    pipeline = [ArchesLocalReader(files, blocks, data_cfg.get("text_field", "text"), val, test),
                ArchesSplitTokenizer(str(output), str(tokenizer_path))]  # fmt: skip
    logs = str(logging_dir or output / "logs")
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(pipeline, tasks=int(tasks), workers=int(workers), logging_dir=logs,
                                     **executor_options)  # fmt: skip
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline, tasks=int(tasks), workers=int(workers), logging_dir=logs, **executor_options)


def entry_from_engine(output_dir: str | Path, entry_dir: str | Path | None = None) -> PreparedData:
    """The arches cache entry of a finished `engine_pipeline` run, at `entry_dir` (default: where
    `arches train` with the same data settings, data.stream=true and data.tokenizer_path finds
    it). Streams the token files, built in a temp folder renamed into place."""
    started = time.perf_counter()
    output = Path(output_dir).expanduser().resolve()
    if not (output / MANIFEST).is_file():
        raise UserError(f"{output} holds no {MANIFEST}; run engine_pipeline(...).run() into it first")
    manifest = json.loads((output / MANIFEST).read_text())
    tasks = manifest["tasks"]
    missing = [rank for rank in range(tasks) if not (output / f"{rank:05d}.json").is_file()]
    if missing:
        raise UserError(f"{len(missing)} of the {tasks} tasks have not finished (ranks {missing[:10]}); run the "
                        "executor again: it skips the finished ones")
    if tokenizer_hash(manifest["tokenizer_path"]) != manifest["tokenizer_hash"]:
        raise UserError(f"{manifest['tokenizer_path']} changed since the tokens were written; run the engine again")
    summaries = [json.loads((output / f"{rank:05d}.json").read_text()) for rank in range(tasks)]
    dtype = np.dtype(summaries[0]["dtype"])
    split_stats = {split: {key: sum(s["splits"][split][key] for s in summaries)
                           for key in ("documents", "bytes", "tokens", "replaced_bytes")}
                   for split in SPLITS}  # fmt: skip
    if sum(s["documents"] for s in split_stats.values()) == 0:
        raise UserError("the corpus is empty; point data at some text")
    entry = Path(entry_dir or manifest["entry"]).expanduser().resolve()
    entry.parent.mkdir(parents=True, exist_ok=True)
    temp = entry.parent / f"{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        shutil.copyfile(manifest["tokenizer_path"], temp / "tokenizer.json")
        with open(temp / "splits.json", "w", encoding="utf-8") as names_out:
            names_out.write("{")
            for position, split in enumerate(SPLITS):
                names_out.write(f'{", " if position else ""}"{split}": [')
                _concatenate(output, split, tasks, dtype, split_stats[split]["documents"], temp, names_out)
                names_out.write("]")
            names_out.write("}\n")
        stats = {
            "source": "local", "key": entry.name,
            "vocab_size": load_tokenizer(temp / "tokenizer.json").get_vocab_size(),
            "requested_vocab_size": None, "dtype": dtype.name, "tokenizer_hash": manifest["tokenizer_hash"],
            "splits": split_stats, "characters": sum(s["splits"][x]["characters"] for s in summaries for x in SPLITS),
            "layout": LAYOUT, "engine": "datatrove", "engine_version": manifest["engine_version"], "tasks": tasks,
            "order": "source order (each task a contiguous run of the files, concatenated in rank order)",
            "tokenizer_seconds": 0.0, "tokenize_seconds": round(sum(s["seconds"] for s in summaries), 3),
            "convert_seconds": round(time.perf_counter() - started, 3), "cache_version": CACHE_VERSION,
        }  # fmt: skip
        total_tokens = sum(s["tokens"] for s in split_stats.values())
        stats["tokens_per_second"] = round(total_tokens / max(stats["tokenize_seconds"], 1e-9))
        (temp / "stats.json").write_text(json.dumps(stats, indent=1))  # last: marks the entry complete
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(temp, entry)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return load_entry(entry, cache_hit=False)


def _concatenate(output: Path, split: str, tasks: int, dtype: np.dtype, documents: int, temp: Path, names_out) -> None:
    """One split's tasks, in rank order, into `<split>.bin` and `.docs.npy`, chunk by chunk; names as they go."""
    starts = np.lib.format.open_memmap(temp / f"{split}.docs.npy", mode="w+", dtype=np.int64, shape=(documents,))
    offset = written = 0
    separator = ""
    with open(temp / f"{split}.bin", "wb") as out:
        for rank in range(tasks):
            tokens = output / split / f"{rank:05d}.ds"
            index = tokens.with_suffix(".ds.index")
            ends = np.memmap(index, dtype="<u8", mode="r") if index.stat().st_size else np.zeros(0, dtype="<u8")
            size = tokens.stat().st_size // dtype.itemsize
            if (int(ends[-1]) if len(ends) else 0) != size or written + len(ends) > documents:
                raise UserError(f"{tokens} does not match its index or its task's counts; run the task again")
            for chunk in range(0, len(ends), CHUNK):
                part = np.asarray(ends[chunk : chunk + CHUNK], dtype=np.int64)
                previous = int(ends[chunk - 1]) if chunk else 0
                starts[written : written + len(part)] = offset + np.concatenate(([previous], part[:-1]))
                written += len(part)
            with open(tokens, "rb") as source:
                shutil.copyfileobj(source, out, CHUNK)
            offset += size
            with open(output / split / f"{rank:05d}.names.jsonl", encoding="utf-8") as names:
                for line in names:
                    names_out.write(separator + line.rstrip("\n"))
                    separator = ", "
    starts.flush()
    del starts
    if written != documents:
        raise UserError(f"the {split} split's index holds {written} documents, the tasks' counts {documents}")
