"""The default run name comes from the config, never the clock, so the same command
resumes an interrupted run; the interruption says which command that is."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import local_corpus

from arches.config import compose
from arches.train.resume import run_name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    return local_corpus(tmp_path_factory.mktemp("run_name"))


def test_the_name_is_a_function_of_what_shapes_training():
    base = ["arch=gpt", "size=debug", "seed=3"]
    name = run_name(compose(base))
    assert name.startswith("gpt-debug-classics-seed3-")
    assert run_name(compose(base)) == name  # the clock plays no part
    # where things go and how often to log do not make another run ...
    assert run_name(compose([*base, "results_dir=/elsewhere", "train.log_interval=7", "resume=never"])) == name
    # ... anything that shapes training does
    assert run_name(compose([*base, "train.lr=2e-3"])) != name
    assert run_name(compose([*base, "+size.dropout=0.1"])) != name
    assert run_name(compose([*base, "run_name=mine"])) == "mine"


def _ctrl_c_as_at_a_terminal() -> None:
    """In the child, before exec: SIGINT's default action. A suite started in the background by a shell
    without job control (`cmd &` in a script) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the child would sleep through the test's Ctrl-C (seen: SigIgn had SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_train_prints_the_command_and_the_same_command_resumes(corpus, tmp_path):
    args = [*corpus, f"results_dir={tmp_path}", "arch=gpt", "size=debug", "trainer.max_steps=12",
            "train.checkpoint_interval=4", "train.val_interval=6"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    flag = tmp_path.parent / f"{tmp_path.name}.paused"
    command = [sys.executable, "-m", "arches.cli", "train", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "ARCHES_TEST_PAUSE_AT": f"checkpoint:*:8@{flag}"},
                               preexec_fn=_ctrl_c_as_at_a_terminal)  # fmt: skip
    deadline = time.time() + 300
    while not flag.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "the step-8 checkpoint was never written"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # seen once under CI load: show where every thread of the child waits
        process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER dumps each thread's stack on SIGABRT
        _, err = process.communicate(timeout=60)
        pytest.fail(f"train did not exit within 300 s of Ctrl-C; its threads:\n{err[-6000:]}")
    assert process.returncode == 130, err[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    expected = shlex.join(["arches", "train", *args])
    assert f"`{expected}` resumes it from step 8" in err, err[-3000:]

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {run_dir.name} from step00000008.ckpt" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(run_dir)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [run_dir]  # no second folder


def test_a_grid_with_failed_jobs_exits_non_zero_naming_them(tmp_path, capsys):
    from arches.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "-m", "arch=gpt,bert", "size=debug", "train.lr=-1e-3", f"results_dir={tmp_path}",
              f"hydra.sweep.dir={tmp_path / 'multirun'}"])  # fmt: skip
    assert exit_.value.code == 2  # every job failed on bad input; it used to exit 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("arches: error: 2 run(s) of the grid failed (gpt-debug-classics-seed0-")
    assert not [p for p in tmp_path.iterdir() if p.name != "multirun"]  # no run folder


def test_a_paused_run_sees_a_ctrl_c_the_kernel_hands_to_another_thread(tmp_path):
    # Linux gives a process's SIGINT to any thread not blocking it. Here the main thread blocks it, so
    # the other thread takes it: Python's handler only sets the pending flag, and a main thread in one
    # long sleep never returned to see it (the CI hang of the Ctrl-C test, with TensorBoard's writer).
    flag = tmp_path / "paused"
    script = (
        "import signal, threading, time\n"
        "from arches.train.run_folder import pause_point\n"
        "threading.Thread(target=time.sleep, args=(120,), daemon=True).start()\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "pause_point('checkpoint:run:8')\n"
    )
    env = {**os.environ, "ARCHES_TEST_PAUSE_AT": f"checkpoint:*:8@{flag}"}
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_ctrl_c_as_at_a_terminal)
    deadline = time.time() + 60
    while not flag.exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the paused process did not see the Ctrl-C")
    assert "KeyboardInterrupt" in err
