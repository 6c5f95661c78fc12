"""The README tour's commands are all covered by tests/readme_tour.py (which CI runs
through `make tour`): a new tour line without a rule to shrink it fails here, in seconds."""

from __future__ import annotations

from pathlib import Path

from readme_tour import README, shrink, tour_commands


def test_every_tour_command_has_a_shrinking_rule(tmp_path):
    commands = tour_commands(README.read_text())
    subcommands = {command.split()[1] for command in commands}
    assert {"data", "list", "train", "eval", "lm-eval", "compare", "report"} <= subcommands
    run = tmp_path / "results" / "a-run"
    for command in commands:
        argv = shrink(command, tmp_path, ["data=local"], run)
        assert argv and argv[0] == command.split()[1], command
        assert "<run>" not in " ".join(argv), command
        if argv[0] == "train" and not {"--help", "--cfg"} & set(argv):  # those train nothing
            assert "size=debug" in argv and sum(a.startswith("size=") for a in argv) == 1, argv
        if argv[0] == "compare":
            assert "quick=true" in argv, argv


def test_a_command_without_a_rule_is_named(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="no rule shrinks `arches frobnicate x=1`"):
        shrink("arches frobnicate x=1", tmp_path, [], None)


def test_the_tour_reads_only_its_own_section(tmp_path):
    readme = "## A short tour\n```bash\narches list   # all\narches train \\\n  arch=gpt\n```\n## Other\n```bash\narches bench\n```\n"
    assert tour_commands(readme, ("## A short tour",)) == ["arches list", "arches train arch=gpt"]
    assert Path(README).name == "README.md"
