"""The README's layout section agrees with the code: every package it names exists with the
modules it lists, and every package and top-level module in the tree is named there."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layout() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Layout\n") :]
    return section[: section.index("```", section.index("```") + 3)]


def described() -> dict[str, list[str]]:
    """{'arches/core': [words of its description], ...} for the two Python trees."""
    entries: dict[str, list[str]] = {}
    root = current = None
    for line in layout().splitlines():
        if re.match(r"^(arches|harness|sweeps|tests)[/ ]", line):
            root = line.split("/")[0].strip()
            continue
        match = re.match(r"^  (\w+)/\s+(.*)", line)
        if match and root in ("arches", "harness"):
            current = f"{root}/{match.group(1)}"
            entries[current] = [match.group(2)]
        elif match is None and current and line.startswith("   "):
            entries[current].append(line.strip())
        if re.match(r"^  [\w.]+\.(py|sh)\b", line) and root in ("arches", "harness"):
            current = f"{root}/."
            entries.setdefault(current, []).append(line.strip())
    return {key: " ".join(words).replace("|", " ").replace(",", " ").split() for key, words in entries.items()}


def test_every_package_in_the_tree_is_described_and_exists():
    entries = described()
    for root in ("arches", "harness"):
        packages = {f"{root}/{p.name}" for p in (REPO / root).iterdir() if (p / "__init__.py").exists()}
        named = {key for key in entries if key.startswith(root) and not key.endswith("/.")}
        assert packages == named, f"README layout vs {root}/: {sorted(packages ^ named)}"


def test_every_module_of_a_package_is_named_in_its_line():
    for package, words in described().items():
        if package.endswith("/."):
            continue
        modules = {p.stem for p in (REPO / package).glob("*.py") if p.stem != "__init__"}
        missing = sorted(m for m in modules if m not in {w.strip("():;`") for w in words})
        assert not missing, f"{package}: modules the README's layout does not name: {missing}"


def test_every_top_level_module_is_named():
    text = layout()
    for root in ("arches", "harness"):
        for path in (REPO / root).glob("*.py"):
            if path.stem != "__init__":
                assert re.search(rf"\b{re.escape(path.name)}\b", text), f"README layout does not name {root}/{path.name}"
