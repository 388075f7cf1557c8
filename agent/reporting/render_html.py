"""Blocks -> one self-contained HTML page: inline CSS, no script, no external resource, a Content-Security-Policy
that forbids scripts anyway; every string from the records goes through html.escape."""

from __future__ import annotations

import html
from collections.abc import Iterable

from agent.reporting.document import Block, Fields, Heading, Paragraph, Table

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:24px;border-bottom:2px solid #d0d7de;padding-bottom:6px}
h2{font-size:19px;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:16px;margin-top:24px}h4{font-size:14px;margin-top:16px}
table{border-collapse:collapse;margin:8px 0 16px;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#f0f3f6}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0 16px}
dt{font-weight:600}dd{margin:0;word-break:break-word}
p.good{color:#116329;font-weight:600}p.bad{color:#a40e26;font-weight:700}p.warn{color:#9a6700;font-weight:600}
p.empty{color:#57606a;font-style:italic}
@media print{body{background:#fff}main{padding:0}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; script-src 'none'"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _table(table: Table) -> str:
    if not table.rows:
        return f'<p class="empty">{_e(table.empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_fragment(blocks: Iterable[Block]) -> str:
    """Blocks -> HTML elements, every string escaped."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = max(1, min(block.level, 6))
            parts.append(f"<h{level}>{_e(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            tone = f' class="{block.tone}"' if block.tone != "plain" else ""
            parts.append(f"<p{tone}>{_e(block.text)}</p>")
        elif isinstance(block, Fields):
            items = "".join(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>" for label, value in block.items)
            parts.append(f"<dl>{items}</dl>")
        else:
            parts.append(_table(block))
    return "\n".join(parts)


def render_html(blocks: Iterable[Block], title: str) -> str:
    body = render_fragment(blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
