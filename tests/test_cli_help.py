"""Help per subcommand, `--cfg`, `arches list <group>`, and tables that keep names whole
(issue 14, "Help"). Most cases call the real CLI in-process (`arches.cli.main`); the two
that change the config tree run it as a subprocess over a copy of the tree, put first
on PYTHONPATH (as tests/test_preset_files.py does), so the shipped tree is never touched."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from arches import cli, help
from arches.config import group_choices, sweeps_dir
from arches.listing import GROUPS, description, first_sentence, group_table
from arches.tables import print_table

HELP_COMMANDS = [name for name in cli.COMMANDS if name != "lm-eval"] + ["data", "data prepare", "data bigbench"]


def arches(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `arches <argv>`, run in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def first_cells(stdout: str) -> dict[str, str]:
    """First cell -> its whole line, for each table row rich printed."""
    return {line.split("│")[1].strip(): line for line in stdout.splitlines() if line.count("│") > 2}


def root_config() -> dict:
    return yaml.safe_load((sweeps_dir() / "config.yaml").read_text())


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_every_command_has_help_that_exits_0(capsys, command):
    code, out, err = arches(capsys, *command.split(), "--help")
    assert code == 0, err
    assert out.startswith(f"usage: arches {command}") and "examples:" in out and "Traceback" not in err
    # every key the help names exists in the config it composes, so no default shown is invented
    assert help.missing_keys(command) == []


def test_train_help_shows_the_main_keys_with_the_configs_defaults(capsys):
    code, out, _ = arches(capsys, "train", "-h")
    assert code == 0
    train = root_config()["train"]
    for key in ("lr", "max_tokens", "micro_batch_size"):
        assert f"train.{key}={train[key]}" in out
    for line in ("arch=gpt", "size=tiny", "data=classics", "seed=0", "trainer.max_steps=null", "results_dir=results",
                 "run_name=null", "resume=auto"):  # fmt: skip
        assert f"  {line} " in out, line
    assert "prefix_lm" in out  # a group's help lists its choices


def test_help_anywhere_and_arches_help_command_are_the_same(capsys):
    assert arches(capsys, "train", "arch=gpt", "--help")[:2] == arches(capsys, "help", "train")[:2]
    code, out, _ = arches(capsys, "help", "data", "prepare")
    assert code == 0 and out.startswith("usage: arches data prepare")
    code, out, _ = arches(capsys, "data", "-h")
    assert code == 0 and "prepare" in out and "bigbench" in out
    code, out, err = arches(capsys, "help", "trian")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Did you mean 'train'" in err


def test_each_commands_help_reads_its_own_defaults(capsys):
    from harness.bench import DEFAULT_SIZE, QUICK_SIZE
    from harness.compare import _experiment_name

    out = arches(capsys, "compare", "--help")[1]
    assert f"experiment={_experiment_name([])} " in out  # the experiment compare runs without one
    assert "compare.rerun_mismatched=false" in out and "quick=false" in out and "tuned=null" in out
    out = arches(capsys, "eval", "--help")[1]
    suite = yaml.safe_load((sweeps_dir() / "eval" / "default.yaml").read_text())
    assert "run=<run folder>" in out and "eval=default" in out and f"eval.limit={suite['limit']}" in out
    assert f"eval.num_fewshot=[{', '.join(map(str, suite['num_fewshot']))}]" in out and "corpus_cloze" in out
    out = arches(capsys, "tune", "--help")[1]
    space = yaml.safe_load((sweeps_dir() / "tune" / "default.yaml").read_text())
    assert "tune=<lr_wd|shape>" in out and f"tune.n_trials={space['n_trials']}" in out and "tune.best=false" in out
    out = arches(capsys, "bench", "--help")[1]
    assert f"{DEFAULT_SIZE} unless --quick (then {QUICK_SIZE})" in out  # bench's own, not the config's size


def test_lm_eval_help_is_lm_evals_own(capsys):
    code, out, _ = arches(capsys, "lm-eval", "--help")
    assert code == 0 and out.startswith("usage: lm-eval")


def test_cfg_job_prints_the_composed_config_and_runs_nothing(capsys, tmp_path):
    results = tmp_path / "results"
    code, out, err = arches(capsys, "train", "arch=llama", "size=debug", "train.lr=0.0042", f"results_dir={results}",
                            "--cfg", "job")  # fmt: skip
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["arch"]["name"] == "llama" and cfg["size"]["name"] == "debug" and cfg["train"]["lr"] == 0.0042
    assert "hydra" not in cfg and "${" in cfg["cache_dir"]  # as Hydra prints it: unresolved
    assert not results.exists()

    resolved = yaml.safe_load(arches(capsys, "train", "--cfg=job", "--resolve")[1])
    assert "${" not in resolved["cache_dir"]
    everything = yaml.safe_load(arches(capsys, "eval", "run=some/run", "-c", "all")[1])
    assert everything["run"] == "some/run" and everything["hydra"]["runtime"]["choices"]["eval"] == "default"

    # a grid: one YAML document per job
    documents = list(yaml.safe_load_all(arches(capsys, "train", "-m", "arch=gpt,bert", "size=debug", "--cfg", "job")[1]))
    assert [d["arch"]["name"] for d in documents] == ["gpt", "bert"]
    # compare prints its experiment's config, quick overrides applied
    cfg = yaml.safe_load(arches(capsys, "compare", "experiment=knobs", "quick=true", f"results_dir={results}",
                                "--cfg", "job")[1])  # fmt: skip
    assert cfg["experiment"]["name"] == "knobs" and cfg["size"]["name"] == "debug" and cfg["quick"] is True
    assert yaml.safe_load(arches(capsys, "tune", "tune=lr_wd", "--cfg", "job")[1])["tune"]["name"] == "lr_wd"
    assert yaml.safe_load(arches(capsys, "data", "prepare", "data=local", "--cfg", "job")[1])["data"]["source"] == "local"
    assert not results.exists()


def test_a_bad_cfg_mode_is_one_line(capsys):
    code, out, err = arches(capsys, "train", "--cfg", "jobs")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "job, hydra, all" in err


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "presets"])
def test_each_list_group_lists_every_file_of_its_folder(capsys, group):
    code, out, err = arches(capsys, "list", group)
    assert code == 0, err
    rows = first_cells(out)
    folder = GROUPS[group]
    for name in group_choices(folder):
        assert name in rows, (name, out)
        # the description starts on the entry's own row (it may wrap onto the next lines)
        assert " ".join(description(sweeps_dir() / folder / f"{name}.yaml").split()[:3]) in rows[name]
    if group == "sizes":
        for name in group_choices("size"):
            shape = yaml.safe_load((sweeps_dir() / "size" / f"{name}.yaml").read_text())
            cells = [cell.strip() for cell in rows[name].split("│")[3:6]]
            assert cells == [str(shape[k]) for k in ("d_model", "n_layers", "n_heads")]
    if group == "experiments":
        families = yaml.safe_load((sweeps_dir() / "experiment" / "families.yaml").read_text())
        budget = f"{families['train']['max_tokens']:,}"  # the experiment's own token budget, as listed
        assert "cd_flm" in rows["wang2022"] and budget in rows["families"] and "[0, 1, 2]" in rows["families"]
    if group == "tune":
        assert "train.lr log" in rows["lr_wd"] and "size.n_layers int" in rows["shape"]
    if group == "suites":
        assert "corpus_ppl" in rows["quick"] and "[0]" in rows["quick"]


def test_an_unknown_list_group_is_one_line_with_the_valid_ones(capsys):
    code, out, err = arches(capsys, "list", "sizez")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Did you mean 'sizes'" in err and "experiments" in err
    assert arches(capsys, "list", "eval")[0] == 0  # a group's folder name works too


def test_descriptions_are_first_sentences():
    assert first_sentence("About 125M parameters (GPT-3 Small, Brown et al. 2020 Table 2.1). More.") == (
        "About 125M parameters (GPT-3 Small, Brown et al. 2020 Table 2.1)."
    )
    assert first_sentence('The grid of Wang et al. 2022, "What Works?" (Table 1). Causal.') == (
        'The grid of Wang et al. 2022, "What Works?" (Table 1).'
    )
    families = sweeps_dir() / "experiment" / "families.yaml"  # its first comment is Hydra's `# @package`
    assert families.read_text().startswith("# @package _global_")
    assert description(families) == "The embedded default: one preset per family, at matched compute."


def test_list_keeps_every_preset_name_whole_in_a_pipe(capsys, monkeypatch):
    """`arches list > file`: a pipe has no width; every preset name and every column comes out whole."""
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = arches(capsys, "list")
    assert code == 0, err
    assert "…" not in out
    rows = first_cells(out)
    for path in sorted((sweeps_dir() / "arch").glob("*.yaml")):
        assert path.stem in rows, path.stem
    header = next(line for line in out.splitlines() if "preset" in line and "┃" in line)
    for column in ("family", "objective", "knobs", "size", "params", "non-emb params", "FLOPs/token"):
        assert column in header


def test_a_narrow_terminal_folds_instead_of_cutting():
    table, _ = group_table("sizes", [])
    buffer = io.StringIO()
    print_table(table, Console(file=buffer, force_terminal=True, width=50, color_system=None))
    out = buffer.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 50
    assert set(group_choices("size")) <= set(first_cells(out))


def test_help_defaults_follow_the_config_and_a_broken_group_file_is_marked(tmp_path):
    """The help reads the tree it runs on: another train.lr there is another default shown.
    A group file that does not parse is marked broken; the group's other files are listed."""
    shutil.copytree(sweeps_dir(), tmp_path / "sweeps", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "sweeps" / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 1.0e-3\n", "  lr: 4.2e-3\n"))
    (tmp_path / "sweeps" / "size" / "small.yaml").write_text("name: small\nd_model: [768\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "arches.cli", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)  # fmt: skip

    result = run("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "train.lr=0.0042 " in result.stdout
    result = run("list", "sizes")
    assert result.returncode == 0, result.stderr
    rows = first_cells(result.stdout)
    assert "broken" in rows["small"] and {"debug", "tiny", "base"} <= set(rows)
    assert "1 size(s) could not be read: small" in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_cell_in_brackets_is_text_not_markup():
    from arches.listing import add_row, table_of

    table = table_of("t", ["name", "description"])
    add_row(table, "glm", "the context and [gMASK] in Part A; shots [0, 5]")
    buffer = io.StringIO()
    print_table(table, Console(file=buffer))
    assert "[gMASK]" in buffer.getvalue()  # rich markup would have swallowed it as a tag


def test_help_does_not_load_torch():
    """`arches <command> --help` answers at once: it composes the config but builds nothing."""
    code = "import sys; from arches.cli import _dispatch; _dispatch(['train', '--help']); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train.lr=" in result.stdout


def test_a_closed_pipe_is_no_error():
    """`arches train --help | head -1`: the reader left early; arches says nothing on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "arches.cli", "train", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    process.stdout.close()  # before arches writes a byte: its first write meets a closed pipe
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr
