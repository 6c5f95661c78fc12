"""Run the README's tour command by command, shrunk, so no README example breaks silently.

    python tests/readme_tour.py [--keep]     (from a clone; `.ci/run` calls it after `make test`)

Every `arches ...` line of the README's "A short tour" section runs as written, with
the overrides that make it small and offline appended (`SHRINK`): the tests' tiny
local corpus instead of the embedded one, `size=debug`, a few steps, a few examples
per task, `quick=true` comparisons. Placeholders (`results/<run>`) become the run the
tour trained first; relative results and corpus paths go to a temporary folder. A
command that cannot run offline is run anyway and must fail the documented way (one
line, exit 2: `OFFLINE`). Any other failure, or a tour command no rule covers, stops
the tour with the command and its output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR_HEADINGS = ("## A short tour", "## Import and export")
TINY = ["data.vocab_size=512", "data.seq_len=128"]  # corpus_next lines run to ~80 tokens
TRAIN_SHRINK = ["size=debug", "trainer.max_steps=4", "train.val_interval=4", "train.val_windows=2"]
EVAL_SHRINK = ["eval.limit=3"]
# Commands that need the Hugging Face Hub: offline they must be refused in one line.
OFFLINE = ("data=hf",)
TOUR_DOCUMENTS = 200


def tour_commands(readme: str, headings: tuple[str, ...] = TOUR_HEADINGS) -> list[str]:
    """The `arches` lines of the tour's bash blocks, continuations joined, comments cut."""
    commands = []
    for heading in headings:
        start = readme.index(heading)
        end = readme.find("\n## ", start + len(heading))
        section = readme[start : end if end > 0 else None]
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("arches "):
                    commands.append(" ".join(line.split()))
    return commands


def _replace_or_add(args: list[str], overrides: list[str]) -> list[str]:
    """Hydra refuses a group given twice (size=tiny size=debug): replace such keys in place."""
    keys = {o.split("=", 1)[0] for o in overrides}
    kept = [a for a in args if a.split("=", 1)[0] not in keys]
    return kept + overrides


def shrink(command: str, work: Path, corpus: list[str], first_run: Path | None) -> list[str] | None:
    """The command's argv, small and offline; None where it needs a run that is not there yet."""
    text = command.replace("notes.txt", str(work / "notes.txt")).replace("corpus/", f"{work / 'corpus'}/")
    text = text.replace("--output_path out/", f"--output_path {work / 'out'}/")
    # the Import and export section's stand-ins: a tiny GPT-2 saved without a tokenizer
    text = text.replace("path/to/gpt2", str(work / "gpt2")).replace("path/to/tokenizer.json", str(work / "tokenizer.json"))
    if "<run>" in text:
        if first_run is None:
            return None
        text = text.replace("results/<run>", str(first_run)).replace("<run>", first_run.name)
    args = shlex.split(text)[1:]
    sub = args[0]
    results = ["results_dir=" + str(work / "results")]
    own_data = any(a.startswith("data=") for a in args)
    data = TINY + [f"cache_dir={work / 'cache'}"] if own_data else corpus
    if sub == "lm-eval":
        return [*args, "--limit", "3"]
    if sub == "import-hf":  # the recorded corpus is what `arches eval` scores it on
        return [*args, *results, *data]
    if sub == "export-hf":
        return [sub, args[1], str(work / "exported"), *args[3:]]
    if sub == "report":
        folder = Path(args[1])
        return [sub, str(work / "results" / f"{folder.name}-quick")]  # the tour's comparisons are quick
    if sub == "list" or "--help" in args or "--cfg" in args:
        return args
    if sub == "data":
        return [*args, *data]
    if sub == "train":
        return _replace_or_add(args, [*results, *data, *TRAIN_SHRINK])
    if sub == "eval":
        run_arg = next(a for a in args if a.startswith("run="))
        if not Path(run_arg[4:]).is_absolute():  # results/hf-gpt2: the tour's results folder
            args = [f"run={work / run_arg[4:]}" if a == run_arg else a for a in args]
        return [*args, *data, *EVAL_SHRINK]
    if sub == "compare":
        quick = [] if "quick=true" in args else ["quick=true"]
        return [*args, *quick, *results, *data, "train.max_tokens=1024"]
    raise SystemExit(f"readme_tour: no rule shrinks `{command}`; add one to tests/readme_tour.py")


def _fake_bigbench(cache_dir: Path, work: Path) -> None:
    """Stands in for `arches data bigbench` (which downloads BIG-bench from PyPI): the
    tests' small fake archive, converted into the tour's cache by the same code."""
    from test_bigbench import HYPERBATON, fake_archive

    from arches.config import compose
    from harness.bigbench.command import spec_from_config, tasks_dir
    from harness.bigbench.convert import convert_archive

    archive = fake_archive(work / "bigbench-1.0.0.tar.gz", {"hyperbaton": HYPERBATON})
    convert_archive(archive, tasks_dir(cache_dir), ["hyperbaton"], spec_from_config(compose([])))


def _tiny_gpt2(work: Path) -> None:
    """The import example's checkpoint: a random GPT-2 of the tests' size, saved without a
    tokenizer (as the README's command expects), and a byte-level tokenizer.json beside it."""
    from hf_checkpoints import hf_config, hf_tokenizer
    from transformers import GPT2LMHeadModel

    GPT2LMHeadModel(hf_config("gpt2")).save_pretrained(work / "gpt2")
    hf_tokenizer("decoder").backend_tokenizer.save(str(work / "tokenizer.json"))


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}  # the tracker lines: nothing leaves the machine
    return subprocess.run([sys.executable, "-m", "arches.cli", *argv], cwd=cwd, capture_output=True, text=True, env=env)


def main(keep: bool = False) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_corpus

    commands = tour_commands(README.read_text())
    work = Path(tempfile.mkdtemp(prefix="arches-tour-"))
    (work / "notes.txt").write_text("A note of a few words.\n" * 50)
    (work / "corpus").mkdir()
    for i in range(5):
        (work / "corpus" / f"doc{i}.txt").write_text(f"Document {i} says a little, then more.\n" * 40)
    # the tests' synthetic English, with enough held-out documents for 5-shot prompts
    write_tiny_corpus(work / "tiny", documents=TOUR_DOCUMENTS)
    corpus = ["data=local", f"data.paths=[{work / 'tiny'}]", *TINY, f"cache_dir={work / 'cache'}"]
    _fake_bigbench(work / "cache", work)
    _tiny_gpt2(work)
    first_run: Path | None = None
    pending = list(commands)
    started = time.time()
    for attempt in range(2):  # a <run> command before any training waits for the second pass
        waiting = []
        for command in pending:
            argv = shrink(command, work, corpus, first_run)
            if argv is None:
                waiting.append(command)
                continue
            began = time.time()
            done = run(argv, ROOT)
            offline = any(marker in command for marker in OFFLINE)
            lines = [line for line in done.stderr.splitlines() if line.startswith("arches: error")]
            ok = (done.returncode == 2 and len(lines) == 1 and "Hub" in lines[0]) if offline else done.returncode == 0
            print(f"{'ok ' if ok else 'FAIL'} {time.time() - began:6.1f}s  {command}", flush=True)
            if not ok:
                print(f"  ran: {shlex.join(argv)}\n  exit {done.returncode}\n{done.stderr[-4000:]}", file=sys.stderr)
                return 1
            printed = done.stdout.strip().splitlines()
            if argv[0] == "train" and first_run is None and printed and Path(printed[-1]).is_dir():
                first_run = Path(printed[-1])  # `arches train` prints its run folder last
        pending = waiting
    if pending:
        print(f"readme_tour: never ran {pending}: no training command came before them", file=sys.stderr)
        return 1
    print(f"readme_tour: {len(commands)} commands in {time.time() - started:.0f} s ({work})")
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(keep="--keep" in sys.argv[1:]))
