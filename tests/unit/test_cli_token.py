"""`rollback-agent token hash` and `token check`: making and checking control.tokens_file."""

import hashlib
import io
import sys
from pathlib import Path

import pytest

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize(
    "typed", [b"a-long-enough-token-42", b"a-long-enough-token-42\n", b"  a-long-enough-token-42\r\n"]
)
def test_hash_matches_sha256sum_of_the_token_without_its_newline(monkeypatch, capsys, typed):
    _stdin(monkeypatch, typed)
    assert main(["token", "hash"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == hashlib.sha256(b"a-long-enough-token-42").hexdigest() + "\n"
    assert "a-long-enough-token-42" not in out + err


def test_hash_refuses_no_token_and_warns_on_a_short_one(monkeypatch, capsys):
    _stdin(monkeypatch, b"\n")
    assert main(["token", "hash"]) == EXIT_USAGE
    assert "no token on stdin" in capsys.readouterr().err
    _stdin(monkeypatch, b"short")
    assert main(["token", "hash"]) == EXIT_OK
    assert "shorter than 16 characters" in capsys.readouterr().err


def test_check_reports_a_good_file_and_each_error_with_its_line(tmp_path: Path, capsys):
    good = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(b"t" * 20).hexdigest()
    good.write_text(f"tokens:\n  - {{name: ana, role: operator, sha256: {digest}}}\n")
    assert main(["token", "check", str(good)]) == EXIT_OK
    assert capsys.readouterr().out == f"{good}: ok (ana (operator))\n"
    good.write_text(f"tokens:\n  - {{name: ana, role: boss, sha256: {digest}}}\n")
    assert main(["token", "check", str(good)]) == EXIT_FAILED
    assert capsys.readouterr().err.startswith(f"{good}:2: tokens.0.role: Input should be")
