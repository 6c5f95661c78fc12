"""Open a report.html in headless Chromium at a given width and list what overflows it.

    python tests/layout_check.py results/families/report.html [--width 1400] [--screenshot out.png]

Prints one line per table: its heading, its width against the page's, and, for a table wider than
the page, the columns that sit past the right edge (those a reader has to scroll to). Exits 1 when
a table's first columns (the comparison's: variant, parameters, FLOPs, tokens, loss, bits/byte)
would need a scrollbar, 0 otherwise. Needs a `chromium` (or `chromium-browser`, `google-chrome`)
binary; tests/test_report_layout.py runs it where one is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FIRST_COLUMNS = 6  # the comparison's columns (issue 16, item 9) must all be on screen

# Runs in the page after layout: for each table, its width, the page's, and the columns past the edge.
PROBE = """
<script>
window.addEventListener('load', () => {
  const page = document.documentElement.clientWidth;
  const rows = [];
  for (const table of document.querySelectorAll('table')) {
    let heading = table.closest('div') ? table.closest('div').previousElementSibling : null;
    while (heading && !/^H[1-3]$/.test(heading.tagName) && !(heading.tagName === 'P' && heading.querySelector('strong')))
      heading = heading.previousElementSibling;
    const cells = [...table.querySelectorAll('thead th')];
    const hidden = cells.filter(c => c.getBoundingClientRect().right > page + 1).map(c => c.textContent.trim());
    const first = cells.slice(0, %d).filter(c => c.getBoundingClientRect().right > page + 1).map(c => c.textContent.trim());
    rows.push({heading: heading ? heading.textContent.trim().slice(0, 60) : '', width: Math.round(table.getBoundingClientRect().width),
               page: page, hidden: hidden, first_hidden: first});
  }
  const out = document.createElement('pre'); out.id = 'layout-probe'; out.textContent = JSON.stringify(rows);
  document.body.appendChild(out);
});
</script>
""" % FIRST_COLUMNS


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def measure(report: Path, width: int = 1400, screenshot: Path | None = None) -> list[dict]:
    """Each table's heading, width, the page width and the header cells past the right edge."""
    binary = browser()
    if binary is None:
        raise SystemExit("layout_check: no chromium binary found; install chromium (apt-get install chromium)")
    page = report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page, encoding="utf-8")
        common = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},2000"]
        dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        if screenshot is not None:
            subprocess.run([*common, f"--screenshot={screenshot.resolve()}", report.resolve().as_uri()],
                           capture_output=True, timeout=120, check=True)
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit("layout_check: the probe did not run (no layout-probe element in the page)")
    import html

    return json.loads(html.unescape(found.group(1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args(argv)
    tables = measure(args.report, args.width, args.screenshot)
    bad = 0
    for table in tables:
        state = "fits" if not table["hidden"] else f"scrolls: {', '.join(table['hidden'])} off-screen"
        print(f"{table['heading'] or '(table)'}: {table['width']} px of {table['page']} px; {state}")
        bad += bool(table["first_hidden"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
