"""The report page from a jinja2 template: the shipped template's document id, identities and sign-off; a team's
own template; templates that cannot be used are errors naming file and line, and run sandboxed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.reporting import compliance_report
from agent.reporting.render_template import DEFAULT_TEMPLATE, TemplateError

from .conftest import HOSTILE
from .trail import Trail, at

NOW = at(9 * 24 * 60)


def page(trail: Trail, versions, template: Path | None = None, **kw) -> str:
    return compliance_report(
        "credit-scorer", trail.records, versions, None, "html", generated_at=NOW, template=template, **kw
    )


def test_the_shipped_page_names_the_document_the_trail_head_the_identities_and_has_a_sign_off(trail, versions):
    html = page(trail, versions)
    data = json.loads(compliance_report("credit-scorer", trail.records, versions, None, "json", generated_at=NOW))
    doc = data["document_id"]
    assert doc.startswith("RBA-20240821-") and html.count(doc) >= 4  # title, head, sign-off statement, footer
    assert '<section id="sign-off">' in html and "Reviewed by (model risk)" in html
    assert f"made from the audit trail up to record {data['audit_chain']['last_seq']}" in html
    assert '<section id="identities-on-record">' in html and "<td>operator:ana</td><td>operator</td>" in html
    assert "chain intact" in html and "signatures unsigned" in html
    ids = [line.split('"')[1] for line in html.splitlines() if line.startswith("<section id=")]
    assert ids[:4] == ["audit-chain", "summary", "versions", "rollbacks"] and ids[-2:] == [
        "identities-on-record",
        "sign-off",
    ]
    assert "script-src 'none'" in html and "<script" not in html
    assert data["identities"][0]["actor"] == "operator:ana"


def test_the_document_id_is_the_same_for_the_same_trail_and_another_for_a_longer_one(trail, versions):
    first = json.loads(compliance_report("credit-scorer", trail.records, versions, None, "json", generated_at=NOW))
    again = json.loads(compliance_report("credit-scorer", trail.records, versions, None, "json", generated_at=NOW))
    shorter = trail.records[:-1]
    other = json.loads(compliance_report("credit-scorer", shorter, versions, None, "json", generated_at=NOW))
    assert first["document_id"] == again["document_id"] != other["document_id"]


def test_a_teams_template_lays_out_the_report_data_escaped(trail, versions, tmp_path):
    own = tmp_path / "ours.html.j2"
    own.write_text(
        "<h1>ACME model risk: {{ model }} ({{ document_id }})</h1>\n"
        "{% for r in report.rollbacks %}<p>{{ r.rollback_id }}: {{ r.trigger.summary }}</p>{% endfor %}\n"
        "{% for s in sections if s.id == 'sign-off' %}{{ s.html }}{% endfor %}\n"
    )
    html = page(trail, versions, own)
    assert html.startswith("<h1>ACME model risk: credit-scorer (RBA-")
    assert "rb-0001" in html and "Approved by (model owner)" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html  # the operator's hostile reason, escaped


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("<p>{{ model }</p>\n", ":1:", "unexpected '}'"),
        ("<p>ok</p>\n{% for x in %}\n", ":2:", "Expected an expression"),
        ("<p>{{ no_such_thing.field }}</p>\n", ":1:", "UndefinedError"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}\n", ":1:", "SecurityError"),
    ],
)
def test_a_template_that_cannot_be_used_is_an_error_naming_file_and_line(
    trail, versions, tmp_path, text, where, message
):
    bad = tmp_path / "bad.html.j2"
    bad.write_text(text)
    with pytest.raises(TemplateError) as raised:
        page(trail, versions, bad)
    assert str(raised.value).startswith(f"{bad}{where}") and message in str(raised.value), str(raised.value)


def test_missing_oversized_and_binary_templates_are_refused(trail, versions, tmp_path):
    with pytest.raises(TemplateError, match="cannot read"):
        page(trail, versions, tmp_path / "absent.j2")
    binary = tmp_path / "binary.j2"
    binary.write_bytes(b"\xff\xfe\x00<h1>")
    with pytest.raises(TemplateError, match="not UTF-8"):
        page(trail, versions, binary)
    huge = tmp_path / "huge.j2"
    huge.write_text("x" * 1_000_001)
    with pytest.raises(TemplateError, match="at most"):
        page(trail, versions, huge)


def test_the_shipped_template_ships_inside_the_package():
    assert DEFAULT_TEMPLATE.is_file() and DEFAULT_TEMPLATE.parent.name == "templates"


def test_a_drill_rollback_is_marked_as_one(versions):
    from agent.pb.rollback_agent.v1 import audit_pb2

    t = Trail()
    t.add(at(1), "operator:ana", audit_pb2.AuditRecord(rollback=audit_pb2.Rollback(
        rollback_id="rb-9", from_version="v3", to_version="v2", outcome="recovered", drill_id="drill-7")))  # fmt: skip
    md = compliance_report("credit-scorer", t.records, versions, None, "md", generated_at=NOW)
    assert "### Drill rollback rb-9: v3 -&gt; v2 (recovered) \\[drill drill-7\\]" in md
    data = json.loads(compliance_report("credit-scorer", t.records, versions, None, "json", generated_at=NOW))
    assert data["rollbacks"][0]["drill_id"] == "drill-7"
