"""`rollback-agent report` checks the trail's signatures with the same keys as `audit verify`: --key-file
[KEY_ID=]PATH, else the config's audit.signing; a re-sealed trail shows up in the report."""

from __future__ import annotations

import json
from pathlib import Path

from agent.cli import main
from agent.domain.audit_signing import HmacKey

from .test_cli_audit_verify import CONFIG, SECRET, make_trail, reseal_from, write_config


def report_json(config: Path, capsys, *flags: str) -> tuple[int, dict, str]:
    code = main(["report", "--config", str(config), "--format", "json", *flags])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else {}, out.err


def test_report_verifies_signatures_with_the_configured_key_or_key_file(tmp_path, capsys):
    (tmp_path / "hmac.key").write_bytes(SECRET)
    signing = write_config(tmp_path, "{mode: hmac, key_file: hmac.key, key_id: prod-1}")
    db = make_trail(tmp_path, HmacKey.from_secret(SECRET, "prod-1"))
    code, data, err = report_json(signing, capsys)
    assert code == 0, err
    assert data["audit_chain"]["signatures"]["status"] == "verified"
    assert data["audit_chain"]["signatures"]["checked_with"] == ["prod-1"]

    plain = tmp_path / "verifier.yaml"  # a reviewer's config: no signing section, the key passed on the command line
    plain.write_text(CONFIG)
    code, data, _ = report_json(plain, capsys)
    assert code == 0 and data["audit_chain"]["signatures"]["status"] == "not_checked"
    code, data, _ = report_json(plain, capsys, "--key-file", f"prod-1={tmp_path / 'hmac.key'}")
    assert code == 0 and data["audit_chain"]["signatures"]["status"] == "verified"

    reseal_from(db, 3, None)
    code, data, _ = report_json(plain, capsys, "--key-file", f"prod-1={tmp_path / 'hmac.key'}")
    assert code == 0  # a report is written either way: it states what is wrong
    assert data["audit_chain"]["intact"] is False
    assert data["audit_chain"]["signatures"]["status"] == "failed"
    assert [p["seq"] for p in data["audit_chain"]["signatures"]["problems"]] == [3, 4, 5]


def test_report_with_an_unreadable_key_file_is_a_usage_error(tmp_path, capsys):
    config = write_config(tmp_path)
    make_trail(tmp_path, None, n=2)
    code, _, err = report_json(config, capsys, "--key-file", str(tmp_path / "missing.key"))
    assert code == 2 and f"{tmp_path / 'missing.key'}: cannot read the signing key" in err
