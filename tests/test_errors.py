"""One error style, end to end: each bad input is a real `arches` subprocess that exits
with code 2 (a user mistake) or 1 (a runtime failure) and prints exactly one line on
stderr, saying what was wrong and what to do. ARCHES_DEBUG=1 shows the traceback.

A failed write (a file size limit: a real EFBIG from the kernel; or a read-only results
folder) is one line naming the folder, and leaves what was there before intact.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import local_corpus

from arches.config import compose


def env(**extra: str) -> dict:
    variables = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
    for name in ("ARCHES_DEBUG", "HYDRA_FULL_ERROR", "ARCHES_TEST_PAUSE_AT"):
        if name not in extra:
            variables.pop(name, None)
    return variables


def file_size_limit(size: int):
    def limit() -> None:  # in the child: writes past `size` bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def arches(*args: str, preexec_fn=None, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arches.cli", *args], capture_output=True, text=True,
                          env=env(**extra_env), timeout=300, preexec_fn=preexec_fn)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny corpus with its cache, one trained run inside a results folder that has a
    report, and the damaged or odd folders the cases point at."""
    from arches.train.loop import train
    from harness.report import write_report

    root = tmp_path_factory.mktemp("errors")
    data = local_corpus(root)
    # no progress lines (tests/test_logging.py checks them): a failed training's stderr is its error alone
    base = [*data, f"results_dir={root / 'results'}", "size=debug", "train.micro_batch_size=4", "train.progress=none"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = train(compose([*base, "trainer.max_steps=2", "variant=gpt", "run_name=gpt-seed0",
                                f"results_dir={root / 'report'}"]))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    write_report(root / "report")
    run = Path(record["run_dir"])

    damaged = root / "damaged" / "gpt-seed0"
    shutil.copytree(run, damaged)
    weights = damaged / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    corrupted = root / "corrupted"
    shutil.copytree(root / "report", corrupted)
    (corrupted / "gpt-seed0" / "run.json").write_text('{"status": "compl')
    (root / "no-checkpoint").mkdir()
    (root / "not-a-run" / "stray").mkdir(parents=True)
    (root / "stray.txt").write_text("not a folder")
    return {"root": root, "data": data, "base": base, "run": run, "damaged": damaged, "corrupted": corrupted}


def cases(w: dict) -> dict[str, tuple[list[str], int, str]]:
    """name -> (arguments, exit code, a substring of the one line)."""
    root, data, base, run = w["root"], w["data"], w["base"], w["run"]
    return {
        # data prepare
        "prepare: unknown source": (["data", "prepare", "data=nope"], 2, "unknown data 'nope'"),
        "prepare: missing path": (["data", "prepare", *data, f"data.paths=[{root / 'missing'}]"], 2, "does not exist"),
        "prepare: vocab too small": (["data", "prepare", *data, "data.vocab_size=10"], 2, "data.vocab_size=10"),
        "prepare: fractions": (["data", "prepare", *data, "data.val_fraction=0.7", "data.test_fraction=0.5"], 2,
                               "sum below 1"),
        "data: unknown subcommand": (["data", "prepair"], 2, "Did you mean 'prepare'?"),
        # train
        "train: unknown preset": (["train", "arch=gtp"], 2, "Did you mean 'gpt'?"),
        "train: not key=value": (["train", "size"], 2, "is not key=value"),
        "train: unknown key": (["train", "train.lrr=0.1"], 2, "train.lrr"),
        "train: zero batch": (["train", *base, "train.micro_batch_size=0"], 2, "train.micro_batch_size=0"),
        "train: resume mode": (["train", *base, "resume=sometimes"], 2, "resume=sometimes"),
        "train: checkpoint interval": (["train", *base, "train.checkpoint_interval=0"], 2, "train.checkpoint_interval=0"),
        "train: window too long": (["train", *base, "data.seq_len=100000"], 2, "fewer than one training window"),
        "train: more spans than sentinels": (["train", *base, "arch=t5", "data.seq_len=4096"], 2,
                                             "make 205 noise spans, but the tokenizer has 100 sentinels; "
                                             "lower data.seq_len (at most 2009 here)"),
        "train: not a run folder": (["train", *base, f"results_dir={root}", "run_name=not-a-run"], 2,
                                    "is not a run folder"),
        "train: loss diverges": (["train", *base, "train.lr=1e30", "trainer.max_steps=3", "run_name=nan"], 1,
                                 "lower train.lr"),
        # eval
        "eval: no run": (["eval"], 2, "which run?"),
        "eval: missing folder": (["eval", f"run={root / 'missing'}"], 2, "is not a folder"),
        "eval: no checkpoint": (["eval", f"run={root / 'no-checkpoint'}"], 2, "has no checkpoint"),
        "eval: negative shots": (["eval", f"run={run}", "eval.num_fewshot=[-1]"], 2, "eval.num_fewshot"),
        "eval: unknown task": (["eval", f"run={run}", "eval.tasks=[corpus_clozee]"], 2, "Did you mean 'corpus_cloze'?"),
        "eval: truncated weights": (["eval", f"run={w['damaged']}", "eval=quick", "eval.limit=2"], 2,
                                    "model.safetensors is truncated or corrupted"),
        # compare
        "compare: unknown experiment": (["compare", "experiment=famlies"], 2, "Did you mean 'families'?"),
        "compare: results_dir is a file": (["compare", "experiment=families", *data, f"results_dir={root / 'stray.txt'}"],
                                           2, "Not a directory"),
        "compare: bad override": (["compare", "experiment=families", "train.lr"], 2, "is not key=value"),
        # tune
        "tune: no space": (["tune", *base], 2, "needs a search space"),
        "tune: unknown space": (["tune", "tune=lr_wdd"], 2, "Did you mean 'lr_wd'?"),
        "tune: bad direction": (["tune", *base, "tune=lr_wd", "tune.direction=sideways"], 2, "tune.direction"),
        # report
        "report: no folder": (["report"], 2, "expected one results folder"),
        "report: missing folder": (["report", str(root / "missing")], 2, "does not exist"),
        "report: corrupted record": (["report", str(w["corrupted"])], 2, "run.json is corrupted"),
        # the command itself
        "unknown command": (["trian"], 2, "Did you mean 'train'?"),
    }


@pytest.fixture(scope="module")
def outcomes(world) -> dict[str, subprocess.CompletedProcess]:
    table = cases(world)
    with ThreadPoolExecutor(max_workers=3) as pool:  # a few at once: most are interpreter start-up
        futures = {name: pool.submit(arches, *args) for name, (args, _, _) in table.items()}
        return {name: future.result() for name, future in futures.items()}


def test_the_table_is_large_and_covers_every_command(world):
    table = cases(world)
    assert len(table) >= 20
    assert {args[0] for args, _, _ in table.values()} >= {"data", "train", "eval", "compare", "tune", "report"}
    assert {code for _, code, _ in table.values()} == {1, 2}


@pytest.mark.parametrize("name", list(cases({"root": Path("/r"), "data": [], "base": [], "run": Path("/r/run"),
                                            "damaged": Path("/r/d"), "corrupted": Path("/r/c")})))  # fmt: skip
def test_bad_input_is_one_line_with_its_exit_code(world, outcomes, name):
    _, code, message = cases(world)[name]
    result = outcomes[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1, f"{result.returncode}: {result.stderr[-3000:]}"
    assert lines[0].startswith("arches: error: ") and message in lines[0], lines[0]


def test_bad_input_leaves_no_run_folder(world, outcomes):
    results = world["root"] / "results"
    # the runtime failure (diverging loss) is recorded; no bad input made a folder
    assert sorted(p.name for p in results.iterdir()) == ["nan"]
    record = json.loads((results / "nan" / "run.json").read_text())
    assert record["status"] == "failed" and "lower train.lr" in record["error"]


def test_debug_shows_the_traceback(world):
    for variable in ("ARCHES_DEBUG", "HYDRA_FULL_ERROR"):
        result = arches("train", "arch=gtp", **{variable: "1"})
        assert result.returncode != 0
        assert "Traceback (most recent call last)" in result.stderr and "UserError" in result.stderr


@pytest.mark.parametrize("arch", [{"family": "encoder_decoder", "objective": "span_corruption"},
                                  {"family": "decoder", "objective": "span_corruption", "mean_span_length": 5.0}])
def test_span_corruption_sentinel_capacity_is_checked_when_composing(arch):
    # T5's span corruption gives each noise span its own sentinel (100 of them): the
    # limit the message names is the longest window that fits, found by trying it
    import numpy as np

    from arches.data.tokenizer import SENTINEL_COUNT
    from arches.errors import UserError
    from arches.families.noise import random_spans_noise_mask, span_corrupt
    from arches.registry import family

    spec = family(arch["family"])
    with pytest.raises(UserError, match=f"has {SENTINEL_COUNT} sentinels") as refused:
        spec.input_len(arch, 100_000)
    limit = int(str(refused.value).split("at most ")[1].split(" ")[0])
    spec.input_len(arch, limit)  # the longest window still fits
    with pytest.raises(UserError, match=f"at most {limit} here"):
        spec.input_len(arch, limit + 1)
    tokens = np.arange(limit) + 200  # and corrupting such a window needs no more sentinels than there are
    noise = random_spans_noise_mask(np.random.default_rng(0), limit, 0.15, arch.get("mean_span_length", 3.0))
    span_corrupt(tokens, noise, tuple(range(7, 7 + SENTINEL_COUNT)), 2)


def test_oom_advice_keeps_the_optimizer_batch():
    from arches.train.fit import oom_advice

    assert oom_advice(16, 1) == "set train.micro_batch_size=8 and train.grad_accum=2 (the same 16 windows per optimizer step)"
    assert oom_advice(12, 2).startswith("set train.micro_batch_size=6 and train.grad_accum=4")
    assert oom_advice(3, 1).startswith("set train.micro_batch_size=1 and train.grad_accum=3")
    assert "already 1" in oom_advice(1, 4)


# ---------------------------------------------------------------- failed writes


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_leaves_the_report_as_it_was(world, tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(world["root"] / "report", folder)
    before = snapshot(folder)
    assert "report.md" in before
    result = arches("report", str(folder), preexec_fn=file_size_limit(4096))  # the first plot is larger
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert f"could not write {folder}/" in lines[0] and "file size limit" in lines[0]
    assert snapshot(folder) == before  # every file as it was, no temp file left


def test_a_full_disk_during_training_keeps_the_run_resumable(world, tmp_path):
    # a run whose step-2 training checkpoint is on disk, then a disk that takes nothing large
    common = [*world["base"], f"results_dir={tmp_path}", "trainer.max_steps=6", "train.checkpoint_interval=2",
              "train.val_interval=2", "run_name=run"]  # fmt: skip
    paused = tmp_path / "paused"
    process = subprocess.Popen([sys.executable, "-m", "arches.cli", "train", *common], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env(ARCHES_TEST_PAUSE_AT=f"checkpoint:run:2@{paused}"))  # fmt: skip
    deadline = time.time() + 300
    while not paused.exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    process.kill()
    process.wait()
    lightning = tmp_path / "run" / "checkpoint" / "lightning"
    kept = snapshot(lightning)
    assert list(kept) == ["step00000002.ckpt"]

    result = arches("train", *common, preexec_fn=file_size_limit(64 * 1024))
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "arches: resuming run from step00000002.ckpt"  # a notice, then the one-line error
    assert result.returncode == 1 and len(lines) == 2, result.stderr[-3000:]
    lines = lines[1:]
    assert f"could not write {lightning}/step00000004.ckpt" in lines[0] and "file size limit" in lines[0]
    assert snapshot(lightning) == kept  # the earlier checkpoint intact, no partial one
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "file size limit" in record["error"]
    # with room again, it resumes from the intact checkpoint and completes
    again = arches("train", *common)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed"][-1]["from_step"] == 2


def read_only(folder: Path, *args: str) -> subprocess.CompletedProcess | None:
    """Run `arches` with `folder` read-only: chmod where permissions apply; as root (who
    ignores them) a read-only bind mount in a private mount namespace. None: not possible here."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        try:
            return arches(*args)
        finally:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(mode)
    if not shutil.which("unshare"):
        return None
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m", "arches.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=300)
    if "arches:" not in result.stderr:  # unshare or mount refused (no privilege for namespaces here)
        return None
    return result


def test_a_read_only_results_folder_leaves_the_report_as_it_was(world, tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(world["root"] / "report", folder)
    before = snapshot(folder)
    result = read_only(folder, "report", str(folder))
    if result is None:
        pytest.skip("cannot make a folder read-only for root here (no mount namespace)")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert f"could not write {folder}/" in lines[0] and ("read-only" in lines[0] or "not writable" in lines[0])
    assert snapshot(folder) == before
