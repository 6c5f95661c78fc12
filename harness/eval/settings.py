"""What one `arches eval` reads besides the tasks: the checked `eval` section (tasks, shots,
the per-task example limit, batch size, device, seeds), the run folder and the run's corpus."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from arches.errors import UserError


def _on_gpu(device: str) -> bool:
    """Whether ArchesLM will score on a GPU: cuda (or auto) where one is visible; it
    falls back to the CPU when cuda is asked for without one."""
    import torch

    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def _limit(ev: DictConfig) -> tuple[int | None, str | None]:
    """eval.limit: examples per task, null for all, or `auto`: all on a GPU and
    `eval.cpu_limit` per task on a CPU, where the encoder's pseudo-log-likelihood
    (one forward per continuation token) would take the full suite past half an hour.
    Whatever is used is recorded with the scores; returns (limit, a note or None)."""
    limit = ev.get("limit")
    if limit == "auto":
        if _on_gpu(str(ev.get("device", "auto"))):
            return None, None
        limit = ev.get("cpu_limit", 100)  # checked by eval_settings, as eval.limit is
        return limit, f"eval.limit=auto: {limit} examples per task on a CPU (eval.limit=null scores every example)"
    return limit, None


def eval_settings(cfg: DictConfig) -> dict:
    """The checked `eval` section: tasks, shots, limit, batch size, device and seeds (a bad value is one line)."""
    from arches.settings import check_eval_settings

    ev = cfg.get("eval")
    if ev is None:
        raise UserError("the config has no `eval` section; add `- eval: default` to sweeps/config.yaml's defaults")
    check_eval_settings(cfg)  # every key's type and range: the one definition of each rule
    tasks = ev.get("tasks")
    tasks = [str(t).strip() for t in ([tasks] if isinstance(tasks, str) else tasks or [])]
    if not tasks:  # no eval.tasks key at all
        raise UserError("eval.tasks is empty; name some tasks, e.g. eval.tasks=[corpus_cloze,corpus_next]")
    shots = ev.get("num_fewshot", [0])
    shots = [int(k) for k in ([shots] if isinstance(shots, int) else shots)]
    limit, limit_note = _limit(ev)
    batch_size = ev.get("batch_size", 16)
    corpus = ev.get("corpus") or {}
    return {
        "tasks": list(dict.fromkeys(tasks)),
        "shots": list(dict.fromkeys(shots)),
        "limit": limit,
        "limit_note": limit_note,
        "batch_size": batch_size,
        "device": str(ev.get("device", "auto")),
        "seed": int(ev.get("seed", 1234)),
        "bootstrap_iters": int(ev.get("bootstrap_iters", 1000)),
        "max_examples": int(corpus.get("max_examples", 500)),
        "fewshot_pool": int(corpus.get("fewshot_pool", 100)),
    }


def _run_folder(cfg: DictConfig) -> tuple[Path, DictConfig]:
    from arches.train.run_folder import CHECKPOINT_DIR, WEIGHTS_FILE, read_config

    if not cfg.get("run"):
        raise UserError("which run? set run=<run folder>, e.g. arches eval run=results/gpt-tiny-classics-seed0-...")
    run_dir = Path(str(cfg.run)).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"run={cfg.run} is not a folder; point run= at a run folder written by `arches train`")
    weights = run_dir / CHECKPOINT_DIR / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{run_dir} has no checkpoint ({weights} is missing); train it first with `arches train`")
    run_cfg = OmegaConf.create(read_config(run_dir))
    if "data" not in run_cfg:
        raise UserError(f"{run_dir / 'config.yaml'} has no `data` section: it is not a run's config; train again")
    return run_dir, run_cfg


def _corpus_config(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """The run's corpus (its own `data` section), looked up in the run's cache folder where
    that exists on this machine, else in this command's `cache_dir`."""
    recorded = run_cfg.get("cache_dir")
    cache_dir = recorded if recorded and Path(str(recorded)).expanduser().is_dir() else cfg.cache_dir
    return OmegaConf.create({"seed": run_cfg.get("seed", 0), "cache_dir": str(cache_dir), "data": run_cfg.data})

