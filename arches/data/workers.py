"""Tokenizing a streamed corpus's shards in `data.num_proc` processes, with progress.

At most two shards per process are in flight, so memory stays bounded however large the
corpus (a Pool's imap would read the whole source ahead). Workers are spawned, not forked:
the tokenizers library turns its threads off in a child forked after it ran, and each worker
gets an equal share of the cores for them (RAYON_NUM_THREADS) so they do not oversubscribe.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from arches.data.shards import ShardJob, read_shard, shard_done, write_shard


def _limit_threads(threads: int) -> None:
    os.environ["RAYON_NUM_THREADS"] = str(threads)


def run_shards(jobs: Iterator[ShardJob], folder: Path, tokenizer_path: str, dtype: str, eos: int, num_proc: int,
               total_bytes: int | None, console) -> int:
    """Tokenize every shard not finished yet (a rerun skips the finished ones); return the count."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("tokenizing"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[line]}"))
    rate = _Rate()
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("shards", total=total_bytes, line="")

        def finished(summary: dict, skipped: bool) -> None:
            rate.add(summary, skipped)
            progress.update(task, completed=rate.bytes, line=rate.line())

        count = 0
        if num_proc == 1:
            for job in jobs:
                count += 1
                if shard_done(folder, job.index):
                    finished(read_shard(folder, job.index), True)
                    continue
                finished(write_shard(job, str(folder), tokenizer_path, dtype, eos), False)
            return count
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // num_proc)
        with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            pending: deque = deque()
            for job in jobs:
                count += 1
                if shard_done(folder, job.index):
                    finished(read_shard(folder, job.index), True)
                    continue
                pending.append(pool.submit(write_shard, job, str(folder), tokenizer_path, dtype, eos))
                while len(pending) >= 2 * num_proc:
                    finished(pending.popleft().result(), False)
            while pending:
                finished(pending.popleft().result(), False)
        return count


class _Rate:
    """Documents, bytes and tokens so far, and the rate of those tokenized in this run."""

    def __init__(self):
        self.started = time.perf_counter()
        self.documents = self.bytes = self.tokens = self.new_tokens = self.new_bytes = 0

    def add(self, summary: dict, skipped: bool) -> None:
        splits = summary["splits"].values()
        documents, size, tokens = (sum(s[key] for s in splits) for key in ("documents", "bytes", "tokens"))
        self.documents, self.bytes, self.tokens = self.documents + documents, self.bytes + size, self.tokens + tokens
        if not skipped:
            self.new_tokens, self.new_bytes = self.new_tokens + tokens, self.new_bytes + size

    def line(self) -> str:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return (f"{self.documents:,} docs · {self.bytes / 1e6:,.0f} MB · {self.tokens:,} tokens · "
                f"{self.new_bytes / 1e6 / seconds:.1f} MB/s · {self.new_tokens / seconds:,.0f} tokens/s")
