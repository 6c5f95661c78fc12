"""`arches data prepare [overrides]`: build or reuse the corpus cache and print its statistics."""

from __future__ import annotations

import time

from arches.data.cache import prepare
from arches.data.splits import SPLITS


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
