"""A report as plain blocks (headings, paragraphs, field lists, tables) of unescaped text, rendered to Markdown,
HTML or terminal text by one renderer each. Content never carries markup: each renderer escapes every string,
so a hostile value in an audit record (a reason, a label) cannot inject markup into any format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tone = Literal["plain", "good", "bad", "warn"]


@dataclass(frozen=True, slots=True)
class Heading:
    level: int  # 1..4
    text: str


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str
    tone: Tone = "plain"


@dataclass(frozen=True, slots=True)
class Fields:
    items: tuple[tuple[str, str], ...]  # (label, value)


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "none"  # shown instead of an empty table


Block = Heading | Paragraph | Fields | Table
