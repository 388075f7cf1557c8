"""Blocks -> terminal text: aligned columns, and control characters from the records shown as \\xNN so a hostile
value cannot move the cursor or recolour the operator's terminal."""

from __future__ import annotations

from collections.abc import Iterable

from agent.reporting.document import Block, Fields, Heading, Paragraph


def clean(text: str) -> str:
    return "".join(
        " " if ch in "\r\n\t" else (f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 else ch)
        for ch in text
    )


def table_lines(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = [clean(h) for h in headers]
    body = [[clean(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body if i < len(r)]) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return [line(head)] + [line(r) for r in body]


def render_text(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            if lines:
                lines.append("")
            text = clean(block.text)
            lines.append(text)
            if block.level <= 2:
                lines.append("=" * len(text) if block.level == 1 else "-" * len(text))
        elif isinstance(block, Paragraph):
            prefix = {"bad": "!! ", "warn": "! "}.get(block.tone, "")
            lines.append(prefix + clean(block.text))
        elif isinstance(block, Fields):
            width = max((len(clean(label)) for label, _ in block.items), default=0)
            lines.extend(f"{clean(label) + ':':<{width + 1}} {clean(value)}" for label, value in block.items)
        elif block.rows:
            lines.extend(table_lines(block.headers, block.rows))
        else:
            lines.append(f"({clean(block.empty)})")
    return "\n".join(lines) + "\n"
