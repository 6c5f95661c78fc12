"""The report's Samples section: each variant's greedy continuation of the same held-out prompts.

What a model writes is the first thing a reader looks at; the scores say how much to trust the
impression. The continuations are those `harness.eval.generations` wrote into `<run>/eval/generations.json`
after the run's evaluation: one row per prompt, one column per variant (its first seed with samples).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from harness.eval.generations import GENERATIONS_FILE, read_generations
from harness.report.formatting import MISSING

LINE_BREAK = "⏎"  # a table cell is one line: a newline in a prompt or a continuation shows as this mark
EMPTY = "(empty)"  # the model stopped at once (an end-of-text or, for T5, the next sentinel)
ONLY_SPACES = "(spaces only)"


def format_note(family: str | None, scoring_format: str | None) -> str | None:
    """How a family's scoring format lays a prompt out for generation (FamilySpec.formats), or None."""
    from arches import registry  # the family files import torch: only when a report reads them

    if family not in registry.FAMILIES:
        return None
    return registry.family(family).formats.get(scoring_format) or None


def shown(text: str | None) -> str:
    """A prompt or continuation as one table line: line breaks marked, other whitespace runs one space."""
    if text is None:
        return MISSING
    if not text:
        return EMPTY
    marked = re.sub(r"[ \t]*\n\s*", lambda m: f" {LINE_BREAK * m.group().count(chr(10))} ", text)
    return re.sub(r"[ \t]+", " ", marked).strip() or ONLY_SPACES


def _seed_key(run: dict) -> tuple:
    seed = run.get("seed")
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def _format_text(variant: str, record: dict) -> str:
    family, chosen = record.get("family") or MISSING, record.get("format") or MISSING
    if record.get("unsupported"):
        return f"{variant} ({family}, a masked LM) does not generate"
    note = format_note(record.get("family"), chosen)
    return f"{variant} ({family}) `{chosen}`" + (f", {note}" if note else "")


def samples_blocks(runs: list[dict], variants: list[str]) -> list[tuple[str, Any]]:
    """The Samples section's blocks: a heading, what is shown, and the table (one row per prompt,
    one column per variant); the completed runs without generations are named in one sentence."""
    blocks: list[tuple[str, Any]] = [("h2", "Samples")]
    records = {run["run_dir"]: read_generations(run["run_dir"]) for run in runs}
    if not any(records.values()):
        blocks.append(("p", f"No samples: no run has eval/{GENERATIONS_FILE} (written by `arches eval` with "
                            "eval.generations > 0, as in the default suite)."))  # fmt: skip
        return blocks
    chosen: dict[str, tuple[dict, dict]] = {}  # variant -> (run, record): its first seed with samples
    for variant in variants:
        with_samples = [run for run in runs if run["variant"] == variant and records[run["run_dir"]]]
        if with_samples:
            run = min(with_samples, key=_seed_key)
            chosen[variant] = (run, records[run["run_dir"]])
    generating = [v for v, (_, record) in chosen.items() if record.get("continuations") is not None]

    prompts: list[str] = []  # every shown prompt, in order of first appearance
    for variant in generating:
        prompts += [p for p in chosen[variant][1]["prompts"] if p not in prompts]
    table = pd.DataFrame({"prompt": [shown(p) for p in prompts]})
    for variant in generating:
        record = chosen[variant][1]
        by_prompt = dict(zip(record["prompts"], record["continuations"]))
        table[variant] = [shown(by_prompt[p]) if p in by_prompt else MISSING for p in prompts]

    seeds = {variant: run.get("seed") for variant, (run, _) in chosen.items()}
    if len(set(map(str, seeds.values()))) == 1:
        seed_text = f"seed {next(iter(seeds.values()))} of each variant (its first seed with samples)"
    else:
        seed_text = "each variant's first seed with samples (" + ", ".join(f"{v} {s}" for v, s in seeds.items()) + ")"
    limits = sorted({str(record.get("max_tokens")) for _, record in chosen.values()})
    prompt_sets = {tuple(record["prompts"]) for v, (_, record) in chosen.items() if v in generating}
    text = (
        f"Greedy decoding of at most {' or '.join(limits)} new tokens after the same held-out prompts for every "
        f"variant (the first words of lines of the corpus's test documents, which no run trained on); "
        f"{seed_text}; {LINE_BREAK} marks a line break. Formats: "
        + "; ".join(_format_text(v, record) for v, (_, record) in chosen.items()) + "."
    )
    if (table.drop(columns="prompt") == EMPTY).any().any():
        text += f" {EMPTY}: the model ended at once (its end of text, or the end of its blank)."
    if len(prompt_sets) > 1:
        text += f" The runs' prompts differ (another corpus or eval.seed): {MISSING} where a variant has no sample."
    blocks.append(("p", text))
    if generating:
        blocks.append(("table", table))
    missing = [str(r["run_name"]) for r in runs if r.get("status") == "completed" and not records[r["run_dir"]]]
    if missing:
        blocks.append(("p", f"No eval/{GENERATIONS_FILE} in {', '.join(missing)} (evaluated with eval.generations=0, "
                            "or before samples were written): evaluate again to add them."))  # fmt: skip
    return blocks
