"""`arches compare experiment=<name>`: train every variant x seed of an experiment,
evaluate each at every shot count of its suite, and write the report.

Work already complete in `results/<experiment>/` is skipped, so a second invocation
after an interruption does only what is missing: a run counts as trained when its
record says `completed`; an evaluation counts as done when the record lists its shot
count under `compared_shots` (written only after lm-eval finished and the scores were
recorded). A run left `running` (or `failed`) by a killed process continues from its
last training checkpoint (`arches.train`, resume=auto), and an evaluation killed midway
reuses the requests it had already scored (harness.lm.cache).

An experiment with a ladder (`experiment.ladder`, harness.ladder) trains every variant x
seed at each of its sizes: each rung is an ordinary experiment folder of its own,
`<experiment>/<size>/<variant>-seed<N>`, with its own report (the rungs' fits: issue 18).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from arches.config import compose, group_choices
from arches.errors import ArchesError, UserError, unknown
from arches.settings import check_compare_settings, rule_for
from harness.ladder import ladder_of

# `quick=true`: any experiment as a smoke check (the tests use it), at one seed.
QUICK_OVERRIDES = [
    "experiment.seeds=[0]",
    "size=debug",
    "data.seq_len=64",
    "train.max_tokens=4096",
    "train.micro_batch_size=4",
    "train.val_interval=4",
    "train.val_windows=4",
    "eval=quick",
    "eval.limit=8",
]


@dataclass
class PlannedRun:
    variant: str
    seed: int
    overrides: list[str]
    run_dir: Path
    size: str | None = None  # a ladder's rung: its size, and its index in experiment.ladder.sizes
    rung: int | None = None

    @property
    def label(self) -> str:
        return f"{self.variant}{'' if self.size is None else ' ' + self.size} (seed {self.seed})"


def _experiment_name(overrides: list[str]) -> str:
    names = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "experiment"]
    if not names:
        return "families"
    if names[-1] not in group_choices("experiment"):
        raise unknown("experiment", names[-1], group_choices("experiment"))
    return names[-1]


def _flag(cfg: DictConfig, key: str) -> bool:
    value = OmegaConf.select(cfg, key, default=False)
    rule_for(key).check(key, value)  # true or false only: "no" would be truthy
    return value


def experiment_dir(cfg: DictConfig) -> Path:
    """results/<experiment>/, or results/<experiment>-quick/ for a smoke check, so smoke
    runs can never stand in for the full comparison's."""
    name = str(cfg.experiment.name)
    return Path(cfg.results_dir) / (f"{name}-quick" if _flag(cfg, "quick") else name)


def experiment_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the experiment's own overrides, the user's): its config composes from both, the
    user's last (`arches compare --cfg job` prints that config)."""
    name = _experiment_name(overrides)
    user = [o for o in overrides if o.split("=", 1)[0].lstrip("+") != "experiment"]
    quick = _flag(compose([f"experiment={name}", *user]), "quick")
    return [f"experiment={name}", *(QUICK_OVERRIDES if quick else [])], user


def plan(overrides: list[str]) -> tuple[DictConfig, list[PlannedRun], list[str]]:
    """The experiment's config and its runs (variant x seed, at each size of its ladder), with
    their overrides."""
    name = _experiment_name(overrides)
    common, user = experiment_overrides(overrides)
    cfg = compose([*common, *user])
    check_compare_settings(cfg)  # the suite (eval.limit=abc) before anything is trained, not after
    experiment = cfg.get("experiment")
    if not experiment or not experiment.get("variants"):
        raise UserError(f"experiment '{name}' lists no variants; add experiment.variants to sweeps/experiment/{name}.yaml")
    ladder = ladder_of(cfg, user)
    out = experiment_dir(cfg)
    tuned = tuned_studies(cfg)
    variants = []
    # `experiment.common`: overrides every variant shares (the block an experiment holds
    # fixed); a variant's own overrides come after them
    shared = list(experiment.get("common") or [])
    for variant, variant_overrides in experiment.variants.items():
        variant_overrides = [*shared, *variant_overrides]
        # only a tuned comparison needs each variant's preset (one compose per variant)
        study = tuned.get(compose([*common, *variant_overrides, *user]).arch.name) if tuned else None
        tuning = [] if study is None else [
            *study["overrides"], f"tuned_study={study['study']}", f"tuned_trials={study['n_trials']}"
        ]
        # the user's overrides come last: they win over the experiment's (and the tuned ones)
        variants.append((str(variant), [*common, *variant_overrides, *tuning, *user]))
    if ladder is None:
        if OmegaConf.select(cfg, "compare.rungs", default=None) is not None:
            raise UserError(f"compare.rungs picks rungs of a ladder, and experiment {name} has no experiment.ladder")
        runs = [PlannedRun(variant, int(seed), [*overrides_for_run, f"seed={seed}", f"variant={variant}"],
                           out / f"{variant}-seed{seed}")
                for variant, overrides_for_run in variants for seed in experiment.seeds]  # fmt: skip
        return cfg, runs, user
    # a ladder climbs: every variant and seed at one rung before the next, so an interrupted
    # ladder has whole rungs to fit; a rung's size and budget come last (ladder_of refuses the user's)
    runs = []
    for rung, size in enumerate(ladder.sizes):
        if size not in _chosen_rungs(cfg, ladder.sizes):
            continue
        for variant, overrides_for_run in variants:
            rung_overrides = ladder.rung_overrides(rung, overrides_for_run, _flag(cfg, "quick"))
            for seed in experiment.seeds:
                run_overrides = [*overrides_for_run, f"seed={seed}", f"variant={variant}", *rung_overrides]
                run_dir = out / size / f"{variant}-seed{seed}"
                runs.append(PlannedRun(variant, int(seed), run_overrides, run_dir, size, rung))
    return cfg, runs, user


def _chosen_rungs(cfg: DictConfig, sizes: tuple[str, ...]) -> tuple[str, ...]:
    """`compare.rungs`: the sizes of the ladder this invocation does (all when unset)."""
    chosen = OmegaConf.select(cfg, "compare.rungs", default=None)
    if chosen is None:
        return sizes
    for size in chosen:
        if size not in sizes:
            raise UserError(f"compare.rungs: {unknown('rung', str(size), list(sizes))}")
    return tuple(map(str, chosen))


def tuned_studies(cfg: DictConfig) -> dict[str, dict]:
    """`tuned=<study>` or `tuned=[a,b]`: each study's best trial, by the preset it tuned."""
    from arches.tune.best import tuned_overrides

    names = cfg.get("tuned")
    if not names:
        return {}
    names = [names] if isinstance(names, str) else list(names)
    studies = [tuned_overrides(cfg.results_dir, str(name)) for name in names]
    return {study["preset"]: study for study in studies}


def reusable(run: PlannedRun, run_cfg: DictConfig, rerun_mismatched: bool) -> None:
    """Refuse (or, asked to, move aside) a run folder trained under another config than
    the experiment now asks for, by the rule `arches train` resumes with: a mismatch is
    never reused, and never deleted."""
    from arches.config import to_container
    from arches.train.resume import config_differences
    from arches.train.run_folder import CONFIG_FILE, read_config

    if not (run.run_dir / CONFIG_FILE).exists():
        return
    differences = config_differences(read_config(run.run_dir), to_container(run_cfg))
    if differences is None:
        return
    # a hidden folder beside the runs: the report and the index skip it
    aside = run.run_dir.parent / ".mismatched" / f"{run.run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not rerun_mismatched:
        raise UserError(
            f"{run.run_dir} was trained under another config than experiment {run_cfg.experiment.name} asks for "
            f"({differences}); compare never reuses it: use another results_dir, or compare.rerun_mismatched=true "
            f"to move it aside and train it again"
        )
    aside.parent.mkdir(exist_ok=True)
    run.run_dir.rename(aside)
    print(f"compare: {run.run_dir} was trained under another config ({differences}); moved to {aside}", file=sys.stderr)


def _record(run: PlannedRun) -> dict:
    from arches.train.record import RUN_RECORD, read_record

    path = run.run_dir / RUN_RECORD
    return read_record(run.run_dir).to_dict() if path.exists() else {}


def record_rung(run: PlannedRun) -> dict:
    """The run's record, with its ladder rung (`ladder_rung`) written into it where it lacks it."""
    from arches.train.record import update_record

    record = _record(run)
    if run.rung is not None and record and record.get("ladder_rung") != run.rung:
        record = update_record(run.run_dir, ladder_rung=run.rung)
    return record


def unigram_log_probs(prepared) -> np.ndarray:
    """log P(token) of a unigram model fitted on a prepared corpus's training split (add-one smoothing)."""
    counts = np.bincount(np.asarray(prepared.tokens("train")), minlength=prepared.vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def unigram_baseline(cfg: DictConfig) -> dict:
    """A unigram model fitted on the training split (add-one smoothing), scored on the
    validation split (nats per token, comparable to an LM's validation loss) and on the
    very passages the corpus_ppl task scores, as many as eval.limit lets lm-eval take
    (bits per byte as lm-eval computes it: the passages' nats / ln 2 / their UTF-8
    bytes), so it sits beside the runs' corpus_ppl bits_per_byte like for like."""
    from arches.data.cache import prepare
    from harness.eval.settings import eval_settings
    from harness.tasks.build import TaskDataSpec, task_data_for_config
    from harness.tasks.loader import load_corpus_task

    prepared = prepare(cfg)
    log_probs = unigram_log_probs(prepared)

    val_tokens = np.asarray(prepared.tokens("val"))
    val_nats = float(-log_probs[val_tokens].sum())
    settings = eval_settings(cfg)
    spec = TaskDataSpec(settings["max_examples"], settings["fewshot_pool"], settings["seed"])
    served = load_corpus_task("corpus_ppl", str(task_data_for_config(cfg, spec)))["test"]
    # lm-eval scores the first eval.limit documents of a task
    passages = [row["text"] for row in served][: settings["limit"]]
    encoded = prepared.tokenizer().encode_batch(passages, add_special_tokens=False)
    passage_nats = sum(float(-log_probs[np.asarray(e.ids, dtype=np.int64)].sum()) for e in encoded)
    passage_bytes = sum(len(text.encode("utf-8")) for text in passages)
    return {
        "unigram": {
            "val_loss_nats": val_nats / max(1, len(val_tokens)),
            "bits_per_byte": passage_nats / np.log(2) / max(1, passage_bytes),
            "split": f"the val split (loss) and the {len(passages)} corpus_ppl passages (bits per byte)",
            "passages": len(passages),
            "tokenizer_hash": prepared.tokenizer_hash,
        }
    }


def compare(overrides: list[str]) -> Path:
    """Run the whole comparison; returns the path of report.md."""
    from rich.console import Console
    from rich.table import Table

    from arches.train.loop import train
    from arches.train.record import update_record
    from arches.train.run_folder import read_json, write_json
    from harness.eval.command import evaluate
    from harness.report import write_report

    console = Console(stderr=True)
    cfg, runs, _ = plan(overrides)
    out = experiment_dir(cfg)
    rerun_mismatched = _flag(cfg, "compare.rerun_mismatched")
    shots = [int(k) for k in cfg.eval.num_fewshot]

    # every run's config composed once: its settings, and an existing run against it,
    # are checked before anything is trained
    from arches.settings import check_data_settings, check_eval_settings, check_train_settings

    run_configs = {}
    for run in runs:
        run_configs[run.run_dir] = compose([*run.overrides, f"results_dir={run.run_dir.parent}", f"run_name={run.run_dir.name}"])
        for check in (check_train_settings, check_data_settings, check_eval_settings):  # a variant may set them
            check(run_configs[run.run_dir])
        reusable(run, run_configs[run.run_dir], rerun_mismatched)
    out.mkdir(parents=True, exist_ok=True)

    def status(run: PlannedRun) -> tuple[bool, list[int]]:
        record = _record(run)
        trained = record.get("status") == "completed"
        return trained, [k for k in shots if k not in (record.get("compared_shots") or [])] if trained else shots

    table = Table(title=f"arches compare: {cfg.experiment.name} ({len(runs)} runs, shots {shots})")
    for column in ("run", "training", "evaluation"):
        table.add_column(column)
    for run in runs:
        trained, missing = status(run)
        table.add_row(run.label, "done" if trained else "to do", "done" if not missing else f"to do: {missing}-shot")
    console.print(table)

    # the experiment's folder, or each rung's of a ladder: one report each (a rung compares its variants)
    folders = list(dict.fromkeys(run.run_dir.parent for run in runs))
    unigram = None  # one corpus, one baseline: scored once, written into each folder
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        baseline = folder / "baseline.json"
        # one written before the baseline was scored on corpus_ppl's passages is scored again
        if not baseline.exists() or "passages" not in (read_json(baseline).get("unigram") or {}):
            unigram = unigram or unigram_baseline(cfg)
            write_json(baseline, unigram)

    started = time.perf_counter()
    for index, run in enumerate(runs, 1):
        trained, missing = status(run)
        if trained and not missing:
            record_rung(run)
            continue
        run_cfg = run_configs[run.run_dir]
        if not trained:
            console.rule(f"[{index}/{len(runs)}] training {run.label}")
            try:
                train(run_cfg)
            except ArchesError as error:
                # recorded as failed in its run folder; the report shows it
                console.print(f"[red]{run.label} failed: {error}[/red]")
                continue
        record = record_rung(run)
        for k in missing:
            console.rule(f"[{index}/{len(runs)}] evaluating {run.label}, {k}-shot")
            eval_cfg = compose([*run.overrides, f"run={run.run_dir}", f"eval.num_fewshot=[{k}]"])
            evaluate(eval_cfg)
            record = update_record(run.run_dir, compared_shots=sorted({*(record.get("compared_shots") or []), k}))
    console.print(f"compare: work done in {time.perf_counter() - started:.0f} s")
    reports = [write_report(folder) for folder in folders]
    if any(run.rung is not None for run in runs):  # each rung's report, then the ladder's: its Scaling section
        reports.append(write_report(out))
    for report in reports[:-1]:
        console.print(f"compare: {report}")
    return reports[-1]


def compare_command(argv: list[str]) -> None:
    report = compare(argv)
    print(report)
