"""`arches list [presets|experiments|suites|tune|sizes]`: one config group as a table, each
entry with a one-line description.

Each entry is composed through Hydra, so the table shows what a run would get (a suite's
inherited settings, an experiment's budget), and its description is the first sentence
of its file's leading comment. A file that does not compose is marked broken and the
others are still listed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from rich.table import Table
from rich.text import Text

from arches.config import check_overrides, compose, group_choices, sweeps_dir
from arches.errors import UserError, unknown
from arches.tables import print_table

# `arches list <group>` -> its folder in sweeps/; the folder names work too (`arches list eval`)
GROUPS = {"presets": "arch", "experiments": "experiment", "suites": "eval", "tune": "tune", "sizes": "size"}
ALIASES = {folder: group for group, folder in GROUPS.items()}
SIZE_ORDER = ["debug", "ladder_xs", "ladder_s", "ladder_m", "tiny", "ladder_10m", "ladder_40m", "small", "base"]  # smallest first; others after, by name
# a full stop after these ends no sentence ("Wang et al. 2022", "e.g. arch=gpt")
ABBREVIATIONS = ("al", "e.g", "i.e", "cf", "vs", "Fig", "Eq", "etc")
PROSE = ("description", "variants", "tasks", "error")  # columns of running text
PROSE_WIDTH = 64


def first_sentence(text: str) -> str:
    """The text up to its first full stop (or ? or !) outside brackets and quotes that ends
    a sentence; comments cite papers ("Brown et al. 2020, Table 2.1") in brackets."""
    depth, quoted = 0, False
    for index, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == '"':
            quoted = not quoted
        elif char in ".?!" and depth == 0 and not quoted:
            ends = index + 1 == len(text) or text[index + 1].isspace()
            word = text[:index].split()[-1] if text[:index].split() else ""
            if ends and not word.endswith(ABBREVIATIONS):
                return text[: index + 1]
    return text


def description(path: Path) -> str:
    """The first sentence of the file's first comment paragraph (Hydra's `# @package`
    line is no description)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("# @package"):
            text = stripped.lstrip("#").strip()
            if not text and lines:  # a bare `#` ends the paragraph
                break
            if text:
                lines.append(text)
        elif lines or (stripped and not stripped.startswith("#")):
            break
    return first_sentence(" ".join(lines))


def size_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: (SIZE_ORDER.index(name) if name in SIZE_ORDER else len(SIZE_ORDER), name))


def value_text(value) -> str:
    """A config value as its command line would write it (null, true, [0, 5])."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def table_of(title: str, columns: list[str], numeric: tuple[str, ...] = ()) -> Table:
    """A table whose first column is a name, kept on one line and never cut (arches.tables);
    prose wraps at PROSE_WIDTH, so a file's lines stay readable."""
    table = Table(title=title, expand=True)
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=index == 0,
                         max_width=PROSE_WIDTH if column in PROSE else None)  # fmt: skip
    return table


def add_row(table: Table, *cells: str | Text) -> None:
    """A row of plain text: a config value or comment in brackets (`[gMASK]`, `[0, 5]`) is no
    rich markup, so none is swallowed."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells))


def broken_row(table: Table, name: str, error: UserError) -> None:
    add_row(table, name, Text.assemble(("broken: ", "red"), str(error)), *[""] * (len(table.columns) - 2))


# --------------------------------------------------------------------------- the groups


def experiment_row(name: str, overrides: list[str]) -> list[str]:
    cfg = compose([f"experiment={name}", *overrides])
    experiment = cfg.experiment
    return [
        description(sweeps_dir() / "experiment" / f"{name}.yaml"), ", ".join(experiment.get("variants") or {}),
        value_text(experiment.get("seeds")), str(cfg.size.name), f"{int(cfg.train.max_tokens):,}", str(cfg.eval.name),
    ]  # fmt: skip


def suite_row(name: str, overrides: list[str]) -> list[str]:
    suite = compose([f"eval={name}", *overrides]).eval
    return [
        description(sweeps_dir() / "eval" / f"{name}.yaml"), ", ".join(str(task) for task in suite.tasks),
        value_text(suite.num_fewshot), value_text(suite.get("limit")),
    ]  # fmt: skip


def tune_row(name: str, overrides: list[str]) -> list[str]:
    space = compose([f"tune={name}", *overrides]).tune
    parameters = []
    for entry in OmegaConf.to_container(space.space, resolve=True) or []:
        bounds = ", ".join(f"{k} {value_text(v)}" for k, v in entry.items() if k not in ("name", "distribution"))
        parameters.append(f"{entry.get('name')} {entry.get('distribution', '')} ({bounds})")
    return [
        description(sweeps_dir() / "tune" / f"{name}.yaml"), "\n".join(parameters) or "(none: the shared settings)",
        str(space.n_trials), f"{space.metric} ({space.direction})",
    ]  # fmt: skip


def size_row(name: str, overrides: list[str]) -> list[str]:
    size = compose([f"size={name}", *overrides]).size
    return [description(sweeps_dir() / "size" / f"{name}.yaml"), *(value_text(size.get(key)) for key in size_keys())]


def size_keys() -> tuple[str, ...]:
    # arches.core imports torch: `arches <command> --help` (which imports this module) need not
    from arches.core.config import SIZE_KEYS

    return SIZE_KEYS


# group -> (title, the name column, the columns after it, numeric columns, one row)
def table_spec(group: str) -> tuple[str, str, list[str], tuple[str, ...], Callable[[str, list[str]], list[str]]]:
    """(title, the name column, the columns after it, numeric columns, one row) of a group."""
    if group == "experiments":
        columns = ["description", "variants", "seeds", "size", "tokens/run", "suite"]
        return "experiments (arches compare experiment=<name>)", "experiment", columns, ("tokens/run",), experiment_row
    if group == "suites":
        return "eval suites (arches eval eval=<name>)", "suite", ["description", "tasks", "shots", "limit"], (), suite_row
    if group == "tune":
        columns = ["description", "parameters", "trials", "metric"]
        return "search spaces (arches tune tune=<name>)", "space", columns, (), tune_row
    return "sizes (size=<name>)", "size", ["description", *size_keys()], size_keys(), size_row


def group_table(group: str, overrides: list[str]) -> tuple[Table, list[str]]:
    """The table of one group other than presets, and the entries that could not be read."""
    title, name_column, columns, numeric, row = table_spec(group)
    table = table_of(title, [name_column, *columns], numeric)
    names = group_choices(GROUPS[group])
    broken = []
    for name in size_order(names) if group == "sizes" else names:
        try:  # a broken file is listed as broken; the others still are
            cells = row(name, overrides)
        except UserError as error:
            broken.append(name)
            broken_row(table, name, error)
            continue
        add_row(table, name, *cells)
    return table, broken


def preset_table(overrides: list[str]) -> tuple[Table, list[str]]:
    """Every preset with its family, knobs, parameters and FLOPs/token per size."""
    import torch

    from arches.core.stack import parameter_counts
    from arches.registry import family, model_config, plain

    cfg = compose(overrides)
    vocab_size, seq_len = int(cfg.data.vocab_size), int(cfg.data.seq_len)
    columns = ["preset", "family", "objective", "knobs", "size", "params", "non-emb params", "FLOPs/token"]
    table = table_of(f"presets (vocab {vocab_size}, window {seq_len} tokens)", columns,
                     ("params", "non-emb params", "FLOPs/token"))  # fmt: skip
    # each size composed once, not once per preset (a compose is ~0.1 s)
    sizes = {name: plain(compose([f"size={name}", *overrides]).size) for name in size_order(group_choices("size"))}
    broken = []
    for preset in group_choices("arch"):
        try:  # a broken preset is listed as broken; the others still are
            arch = plain(compose([f"arch={preset}", *overrides]).arch)
            model_config(arch, sizes.get("debug") or next(iter(sizes.values())), vocab_size)
        except UserError as error:
            broken.append(preset)
            broken_row(table, preset, error)
            table.add_section()
            continue
        # one knob a line: the column stays as narrow as its longest knob
        knobs = "\n".join(f"{k}={value_text(v)}" for k, v in (arch.get("model") or {}).items())
        for index, (size_name, size) in enumerate(sizes.items()):
            model_cfg = model_config(arch, size, vocab_size)
            with torch.device("meta"):  # count without allocating
                model = family(arch["family"]).build(model_cfg, arch)
            counts = parameter_counts(model)
            flops = family(arch["family"]).flops_per_token(model_cfg, arch, seq_len)
            add_row(
                table, preset, arch["family"], arch.get("objective", ""), knobs if index == 0 else "", size_name,
                f"{counts['total'] / 1e6:.2f}M", f"{counts['non_embedding'] / 1e6:.2f}M", f"{flops / 1e6:.1f}M",
            )  # fmt: skip
        table.add_section()
    return table, broken


def list_command(argv: list[str]) -> None:
    """`arches list [group] [overrides]`: one group as a table (presets when none is named)."""
    group, overrides = "presets", list(argv)
    if overrides and "=" not in overrides[0]:
        group = overrides.pop(0)
    group = ALIASES.get(group, group)
    if group not in GROUPS:
        raise unknown("list group", group, GROUPS)
    check_overrides(overrides)
    table, broken = preset_table(overrides) if group == "presets" else group_table(group, overrides)
    print_table(table)
    if broken:
        kind = "preset" if group == "presets" else GROUPS[group]
        note = f"arches list: {len(broken)} {kind}(s) could not be read: {', '.join(broken)} (see the table)"
        print(note, file=sys.stderr)
