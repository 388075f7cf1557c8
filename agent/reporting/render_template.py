"""The compliance report as a page from a jinja2 template: the shipped one (templates/compliance.html.j2), or a copy
a compliance team adapted (`report --template FILE`: letterhead, wording, sections, the sign-off block).

The template runs in jinja2's sandbox with autoescaping: it can lay out what it is given, not run code, and every
string from the records is escaped unless it is one of the pre-rendered (already escaped) HTML parts. What it is
given (documented in docs/registry.md):

- `document_id`, `model`, `generated_at`, `period_start`, `title`;
- `chain`: `intact`, `records`, `last_seq`, `last_hash`, `signatures` (verified | not_checked | unsigned |
  failed), `signed_by`;
- `header` (HTML): the title's fields; `sections`: each with `id`, `title` and `html` (HTML), in report order
  (audit-chain, summary, versions, rollbacks, ..., identities-on-record, sign-off);
- `sign_off_roles`; `css` (the shipped style sheet); `report`: the whole report as the JSON format has it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from agent.reporting.document import Block, Heading
from agent.reporting.layout import SIGN_OFF_ROLES, report_blocks
from agent.reporting.render_html import _CSP, _CSS, render_fragment
from agent.reporting.render_json import render_json
from agent.reporting.report_data import ComplianceReport
from agent.reporting.when import format_time

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES_DIR / "compliance.html.j2"
MAX_TEMPLATE_BYTES = 1_000_000


class TemplateError(ValueError):
    """The template cannot be read or rendered; the message names the file and, where known, the line."""


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    html: Markup


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().split("(")[0]).strip("-") or "section"


def split_sections(blocks: list[Block]) -> tuple[str, list[Section]]:
    """(the HTML before the first level-2 heading, minus the title; the level-2 sections)."""
    header: list[Block] = []
    sections: list[tuple[str, list[Block]]] = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            sections.append((block.text, []))
        elif sections:
            sections[-1][1].append(block)
        elif not (isinstance(block, Heading) and block.level == 1):
            header.append(block)
    return render_fragment(header), [
        Section(_slug(title), title, Markup(render_fragment(body)))  # escaped by render_fragment
        for title, body in sections
    ]


def _read(template: Path) -> str:
    try:
        size = template.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{template}: {size:,} bytes; a report template is at most {MAX_TEMPLATE_BYTES:,}")
        return template.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{template}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{template}: not UTF-8 text (byte {exc.start})") from None


def render_report_page(report: ComplianceReport, template: Path | None = None) -> str:
    """The report page from `template` (default: the shipped one). Raises TemplateError naming file and line."""
    path = template or DEFAULT_TEMPLATE
    source = _read(path)
    env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    header, sections = split_sections(report_blocks(report))
    chain = report.chain
    context: dict[str, Any] = {
        "title": f"Rollback compliance report: {report.model}",
        "document_id": report.document_id,
        "model": report.model,
        "generated_at": format_time(report.generated_at),
        "period_start": format_time(report.period_start),
        "chain": {
            "intact": chain.intact,
            "records": chain.records,
            "last_seq": chain.last_seq,
            "last_hash": chain.last_hash,
            "signatures": chain.signatures.state,
            "signed_by": list(chain.signatures.signed_by),
        },
        "header": Markup(header),  # escaped by render_fragment
        "sections": sections,
        "sign_off_roles": SIGN_OFF_ROLES,
        "css": Markup(_CSS),  # our own style sheet
        "csp": Markup(_CSP),  # our own policy (its quotes must stay quotes)
        "report": json.loads(render_json(report)),
    }
    try:
        return env.from_string(source).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: {exc.message}") from None
    except (jinja2.TemplateError, TypeError, ValueError, RecursionError) as exc:
        line = _template_line(exc)
        raise TemplateError(f"{path}{f':{line}' if line else ''}: {type(exc).__name__}: {exc}") from None


def _template_line(exc: BaseException) -> int | None:
    """The template line a render error came from (jinja2 puts template frames in the traceback)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
