"""The other scoring formats' pass: the run's 0-shot multiple-choice tasks scored again in the
format a reader might have chosen instead of the checkpoint's default (issue 16, item 7).

    eval.alternative_formats: true   (sweeps/eval/default.yaml; false in quick.yaml)

A format is an alternative only where the family's scorer offers one that asks the same
question in another layout, and the checkpoint trained what that layout needs:

- encoder: `pll` beside the default `pll_word_l2r` (Salazar et al. 2020's PLL, one token
  masked at a time, against Kauf & Ivanova 2023's word-level l2r variant, which also masks
  the word's later tokens);
- encoder_decoder trained by span corruption: `plain` (context -> encoder, continuation ->
  decoder) beside `t5_sentinel` (T5's own infilling layout, Raffel et al. 2020 §3.1.4);
- glm trained with [gMASK] windows: `gmask` beside `mask` (Du et al. 2022 §2.3).

The pass runs lm-eval's `simple_evaluate` with the same tasks, limit and seeds as the main
0-shot pass, only over the tasks whose requests are multiple choice (the minimal pairs
included; never corpus_ppl, corpus_cloze or few-shot prompts). Its files go to
`<run>/eval/alternatives/<format>/` and its entries to run.json's `alternatives`
({format: {"task|0": entry}}, entries as in `evals`; a task the format could not score, such as
a continuation longer than T5's trained target in the plain format, has an entry with `skipped`,
the reason, and no metrics), so the score tables, which read
`evals` only (harness.store.scores), never mix formats; the report's ranking-robustness
section (harness/report/robustness.py) reads them.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from arches.errors import UserError
from harness.eval.records import EVAL_DIR, record_entries, scored_pass, write_results

RECORD_KEY = "alternatives"  # run.json's key, beside `evals`
FOLDER = f"{EVAL_DIR}/alternatives"
SETTING = "alternative_formats"  # eval.alternative_formats


def enabled(cfg: Any) -> bool:
    """eval.alternative_formats (checked by arches.settings); absent means off."""
    return bool((cfg.get("eval") or {}).get(SETTING, False))


def multiple_choice_names(names: list[str], tasks: dict, members: dict[str, list[str]], shots: list[int]) -> list[str]:
    """The names (tasks or groups) whose every leaf task is multiple choice, where the main pass scores
    0 shots (an evaluation at other shot counts alone scores none of them at 0, not even the pairs)."""
    if 0 not in shots:
        return []
    chosen = []
    for name in names:
        leaves = [tasks[leaf] for leaf in members.get(name, [name]) if leaf in tasks]
        if leaves and all(task.OUTPUT_TYPE == "multiple_choice" for task in leaves):
            chosen.append(name)
    return chosen


def in_format(model, scoring_format: str):
    """The ArchesLM `model` scoring in another format: a shallow copy sharing its weights, tokenizer,
    request cache (whose keys hold the format) and batch sizes, with the family's scorer built for
    `scoring_format`, so the weights are loaded and held once. A UserError where the checkpoint did
    not train what the format needs (a GLM without [gMASK] windows)."""
    from arches.registry import family

    other = copy.copy(model)
    other.scorer = family(model.meta["family"]).scorer(model.model, model.tokenizer, model.meta["arch"],
                                                       trained=model.meta.get("trained_lengths"),
                                                       format=scoring_format)  # fmt: skip
    return other


def score_alternatives(cfg: Any, settings: dict, run_dir: Path, model, resolved: dict, tasks: dict,
                       members: dict[str, list[str]]) -> tuple[dict[str, dict], list[str]]:
    """({format: {"task|0": entry}}, notes): the 0-shot multiple-choice tasks in the alternative format
    of `model`'s default, with the main pass's limit and seeds; ({}, []) when off or there is none."""
    from arches.registry import family

    if not enabled(cfg):
        return {}, []
    # the checkpoint's default format -> the one scored beside it (FamilySpec.alternatives)
    alternative = family(model.meta["family"]).alternative_of(model.scoring_format)
    if alternative is None:
        return {}, []
    names = multiple_choice_names(resolved["names"], tasks, members, settings["shots"])
    if not names:
        return {}, []
    try:
        other = in_format(model, alternative)
    except UserError as error:  # the checkpoint never trained that format: nothing to compare
        return {}, [f"alternative format {alternative} not scored: {error}"]
    entries: dict[str, dict] = {}
    notes: list[str] = []
    started = time.perf_counter()
    for name in names:  # one at a time: a task the format cannot score is left out, never the others
        try:
            results, common = scored_pass(other, [name], 0, settings, resolved["manager"])
        except UserError as error:  # e.g. T5's plain format has no successive blanks for a long continuation
            notes.append(f"alternative format {alternative}: {name} not scored ({error})")
            # recorded, so the report can say why its rule has no outcomes for these tasks
            for task in dict.fromkeys([name, *members.get(name, [])]):
                entries[f"{task}|0"] = {"task": task, "shots": 0, "format": alternative,
                                        "default_format": model.scoring_format, "skipped": str(error),
                                        "samples_file": None}  # fmt: skip
            continue
        files = write_results(run_dir, 0, results, folder=f"{FOLDER}/{alternative}")
        entries.update(record_entries(results, 0, files, {**common, "default_format": model.scoring_format}))
    seconds = time.perf_counter() - started
    scored = sum(not entry.get("skipped") for entry in entries.values())
    notes.insert(0, f"alternative format {alternative}: {scored} 0-shot entries, {seconds:.1f} s "
                    f"({FOLDER}/{alternative}/)")
    return {alternative: entries}, notes


def alternatives_record(record: dict, new: dict[str, dict]) -> dict:
    """The keyword for update_record: {"alternatives": the record's, each format's entries merged with
    the new ones}, or {} when there is nothing new (a run never scored in another format has no key)."""
    if not new:
        return {}
    current = dict(record.get(RECORD_KEY) or {})
    for scoring_format, entries in new.items():
        current[scoring_format] = {**(current.get(scoring_format) or {}), **entries}
    return {RECORD_KEY: current}
