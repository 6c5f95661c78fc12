"""The minimal-pair tasks in `arches eval`: their data, their group, and BLiMP by name.

- `corpus_pairs` (the group) and each `pairs_<kind>` run by name. Their data is built
  from the run's own corpus, with pairs of equal length under the run's tokenizer
  (harness/tasks/pairs.py), and reaches the task loader through lm-eval's task
  metadata (`arches_pairs_data`), as the corpus tasks' data does.
- The group holds the kinds of `eval.corpus.pair_kinds`. The bundled
  `corpus_pairs.yaml` lists all four; for a subset (or when the held-out split gives
  no pair of some kind) a group YAML with those kinds is written next to the pairs and
  put after the bundled tasks on the include path, where it replaces the bundled group.
  So lm-eval itself aggregates the group (the unweighted mean of its kinds, its stderr
  sqrt(sum se_k^2)/k) exactly as its own CLI would, and its results stay consistent.
  (lm-eval 0.4.13 cannot take a group as an inline dict: its overrides reach the
  member tasks' TaskConfig, which refuses `aggregate_metric_list`.)
- BLiMP (Warstadt et al. 2020) is lm-eval's own `blimp` group and `blimp_*` tasks,
  unchanged: they load the Hub dataset their template names (nyu-mll/blimp). Offline
  they are one line naming that dataset and the offline alternative, corpus_pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from arches.errors import UserError, closest
from harness.tasks.build import TASKS_DIR
from harness.tasks.loader import PAIRS_METADATA_KEY
from harness.tasks.pairs import (
    GROUP,
    KINDS,
    no_pairs,
    pair_counts,
    pair_spec,
    pairs_data_for_config,
    short_note,
    task_name,
)

PAIR_TASKS = (GROUP, *map(task_name, KINDS))
GROUPS_DIR = "groups"  # inside the pairs folder: one generated group YAML per set of kinds


@dataclass
class PairsPlan:
    """What resolve_tasks needs: the task names to run, the extra include path, metadata, and
    the notes `arches eval` shows (kinds left out, kinds with fewer pairs than asked)."""

    names: list[str]
    folder: Path
    include: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, str]:
        return {PAIRS_METADATA_KEY: str(self.folder)}


def group_folder(folder: Path, kinds: list[str]) -> Path:
    """A folder holding only a `corpus_pairs` group YAML of these kinds (the bundled one's
    aggregation, its task list cut), written once; lm-eval indexes every YAML below an
    include path, so the folder holds nothing else."""
    from arches.train.run_folder import write_atomic

    bundled = yaml.safe_load((TASKS_DIR / f"{GROUP}.yaml").read_text(encoding="utf-8"))
    config = {**bundled, "task": [task_name(kind) for kind in kinds]}
    text = (f"# Written by `arches eval` (harness/eval/pairs.py): {GROUP} over the kinds "
            f"{', '.join(kinds)}, replacing the bundled group's list of all four.\n"
            + yaml.safe_dump(config, sort_keys=False))  # fmt: skip
    out = Path(folder) / GROUPS_DIR / "+".join(kinds)
    path = out / f"{GROUP}.yaml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return out


def prepare_pairs(names: list[str], optional: set[str], ev: Any, corpus_cfg: Any) -> PairsPlan | None:
    """Build (or reuse) the pairs the requested names need; None when no pair task is asked.

    A kind named on its own that gives no pairs is a UserError (skipped with a note when
    optional, `pairs_morph?`); in the group it is left out with a note, and the group
    runs over the kinds that have pairs. A kind named on its own and held by the group is
    scored once, in the group (lm-eval refuses a task requested twice)."""
    asked = [name for name in names if name in PAIR_TASKS]
    if not asked:
        return None
    spec = pair_spec(ev)  # the kinds checked, with the closest name for a typo
    group = GROUP in asked
    named = [name.removeprefix("pairs_") for name in asked if name != GROUP]
    kinds = tuple(dict.fromkeys([*(spec.kinds if group else ()), *named]))
    folder = pairs_data_for_config(corpus_cfg, replace(spec, kinds=kinds), empty_ok=True)
    counts = pair_counts(folder, kinds)
    documents = _test_documents(folder, kinds[0])
    plan = PairsPlan(list(names), folder)
    plan.notes = [note for kind in kinds if counts[kind] and (note := short_note(kind, counts[kind], spec))]
    drop: set[str] = set()
    for kind in named:
        if not counts[kind]:
            if task_name(kind) not in optional:
                raise no_pairs(kind, documents)
            plan.skipped.append((task_name(kind), "the held-out split gives no pairs of this kind"))
            drop.add(task_name(kind))
    if group:
        held = [kind for kind in spec.kinds if counts[kind]]
        plan.skipped += [(task_name(kind), f"the held-out split gives no pairs of this kind; {GROUP} runs without it")
                         for kind in spec.kinds if not counts[kind]]  # fmt: skip
        if not held:
            if GROUP not in optional:
                raise UserError(
                    f"{GROUP}: the held-out split ({documents} documents) gives no pairs of any kind in "
                    f"eval.corpus.pair_kinds ({', '.join(spec.kinds)}); raise data.test_fraction or add text"
                )
            drop.add(GROUP)
        elif tuple(held) != KINDS:
            plan.include.append(group_folder(folder, held))
        drop |= {task_name(kind) for kind in held}
    plan.names = [name for name in names if name not in drop]
    return plan


def _test_documents(folder: Path, kind: str) -> int:
    from harness.tasks.build import manifest

    return len(manifest(Path(folder) / kind).get("test_documents") or [])


# ---------------------------------------------------------------- BLiMP, lm-eval's own


@lru_cache(maxsize=1)
def blimp() -> tuple[str, tuple[str, ...]]:
    """(the Hub dataset lm-eval's BLiMP template loads, the blimp group and its task names),
    read from lm-eval's own YAMLs: no task index (some 15 s) is needed to name them."""
    import lm_eval.tasks

    folder = Path(lm_eval.tasks.__file__).parent / "blimp"
    if not folder.is_dir():
        return "nyu-mll/blimp", ("blimp",)
    template = yaml.safe_load((folder / "_template_yaml").read_text(encoding="utf-8")) or {}
    tasks = [f"blimp_{path.stem}" for path in sorted(folder.glob("*.yaml")) if not path.name.startswith("_")]
    return str(template.get("dataset_path", "nyu-mll/blimp")), ("blimp", *tasks)


def blimp_offline(name: str) -> UserError | None:
    """The one line for a BLiMP task where the Hub cannot be reached; None for other names."""
    if name != "blimp" and not name.startswith("blimp_"):
        return None
    dataset, names = blimp()
    what = "group" if name == "blimp" else "task" if name in names else "task name"
    hint = "" if name in names else closest(name, names)
    return UserError(
        f"'{name}' is lm-eval's BLiMP {what}, whose data is the Hugging Face Hub dataset {dataset}, which cannot be "
        f"reached here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set, or no connection); offline, eval.tasks=[{GROUP}] "
        f"scores minimal pairs in BLiMP's format built from the run's held-out corpus.{hint}"
    )
