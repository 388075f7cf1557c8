"""Blocks -> GitHub-flavoured Markdown. Every string is escaped: Markdown and HTML syntax characters are
backslash-escaped or turned into entities, and table cells cannot break out of their row or column."""

from __future__ import annotations

from collections.abc import Iterable

from agent.reporting.document import Block, Fields, Heading, Paragraph, Table

_BACKSLASHED = "\\`*_[]|#~"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _BACKSLASHED:
            out.append("\\" + ch)
        elif ch in "\r\n":
            out.append(" ")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _table(table: Table) -> list[str]:
    if not table.rows:
        return [f"_{escape(table.empty)}_", ""]
    lines = [
        "| " + " | ".join(escape(h) for h in table.headers) + " |",
        "|" + "|".join("---" for _ in table.headers) + "|",
    ]
    lines.extend("| " + " | ".join(escape(c) or " " for c in row) + " |" for row in table.rows)
    lines.append("")
    return lines


def render_markdown(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines.extend(["#" * max(1, min(block.level, 6)) + " " + escape(block.text), ""])
        elif isinstance(block, Paragraph):
            text = escape(block.text)
            lines.extend([f"**{text}**" if block.tone in ("bad", "warn") else text, ""])
        elif isinstance(block, Fields):
            lines.extend(f"- **{escape(label)}:** {escape(value)}" for label, value in block.items)
            lines.append("")
        else:
            lines.extend(_table(block))
    return "\n".join(lines).rstrip("\n") + "\n"
