"""Rendering the report's blocks as Markdown and as self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import pandas as pd


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"{'#' * int(kind[1])} {content}")
        elif kind == "p":
            parts.append(content)
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in content))
        elif kind == "table":
            parts.append(_markdown_table(content))
        elif kind == "img":
            title, name, _ = content
            parts.append(f"![{title}]({name})")
    return "\n\n".join(parts) + "\n"


_NUMBER = r"([−+-]?\d[\d.]*(?:e[−+-]?\d+)?)"
INTERVAL = re.compile(rf" \[{_NUMBER}, {_NUMBER}\]")  # ' [0.580, 0.640]' after a cell's estimate
PROSE_CELL = 60  # characters: a cell longer than this is running text, not a number with its interval

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
.prose td { white-space: normal; min-width: 14em; vertical-align: top; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def render_html(blocks: list[tuple[str, Any]], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
    ]
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{_inline_html(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(content)}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in content) + "</ul>")
        elif kind == "table":
            table_html = content.to_html(index=False, border=0, escape=True)
            table_html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", table_html)  # a cell's bold best estimate
            # an estimate's interval goes under it, so a row of six variants fits a 1400 px window
            table_html = INTERVAL.sub(r"<br>[\1, \2]", table_html)
            # numbers stay on one line; a table of running text (the Samples) wraps instead of scrolling
            prose = any(len(str(value)) > PROSE_CELL for value in content.to_numpy().ravel())
            parts.append(f'<div class="scroll{" prose" if prose else ""}">' + table_html + "</div>")
        elif kind == "img":
            alt, _, png = content
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
