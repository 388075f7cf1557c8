"""control.tokens_file: named identities with roles, token hashes only; every error names the file and line."""

from pathlib import Path

import pytest

from agent.http.identities import Role, token_sha256
from agent.http.tokens_file import TokensFileError, load_tokens_file, parse_tokens_file

ANA = token_sha256("ana-token-0123456789")
BOB = token_sha256("bob-token-0123456789")

GOOD = f"""\
tokens:
  - name: ana
    role: operator
    sha256: {ANA}
  - name: ci.reader@example
    role: read-only
    sha256: {BOB.upper()}
"""


def test_a_good_file_gives_named_identities_with_roles(tmp_path: Path):
    path = tmp_path / "tokens.yaml"
    path.write_text(GOOD)
    identities = load_tokens_file(path)
    assert [(i.name, i.role) for i in identities] == [("ana", Role.OPERATOR), ("ci.reader@example", Role.READ_ONLY)]
    assert identities.authenticate(b"bob-token-0123456789").name == "ci.reader@example"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("role: operator", "role: superuser"),
            "t.yaml:3: tokens.0.role: Input should be 'read-only', 'operator' or 'admin'",
        ),
        (
            GOOD.replace("ci.reader@example", "ana"),
            "t.yaml:5: tokens.1.name: the same name as tokens.0 ('ana')",
        ),
        (
            GOOD.replace(BOB.upper(), ANA),
            "t.yaml:7: tokens.1.sha256: the same token as tokens.0",
        ),
        (
            GOOD.replace(ANA, ANA[:40]),
            "t.yaml:4: tokens.0.sha256: sha256 must be the 64 hex digits of the token's SHA-256 (not the token "
            "itself), got 40 characters",
        ),
        (
            GOOD.replace(ANA, token_sha256("x")[:-1] + "g"),
            "t.yaml:4: tokens.0.sha256: sha256 must be the 64 hex digits",
        ),
        (
            GOOD.replace(ANA, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "t.yaml:4: tokens.0.sha256: sha256 is the hash of an empty token",
        ),
        (
            GOOD.replace("    role: read-only", "    role: read-only\n    roles: admin"),
            "t.yaml:7: tokens.1.roles: Extra",
        ),
        (GOOD.replace("    role: read-only", "    role: read-only\n    role: admin"), "t.yaml:7: duplicate key 'role'"),
        (GOOD.replace("  - name: ana\n", "  - \n"), "t.yaml:3: tokens.0.name: Field required"),
        (GOOD.replace("name: ana", "name: -ana"), "t.yaml:2: tokens.0.name: a name is 1-63 letters"),
        ("tokens: []\n", "t.yaml:1: tokens: List should have at least 1 item"),
        ("- ana\n", "t.yaml:1: expected a mapping with `tokens:`"),
        ("tokens: [\n", "t.yaml:2: not valid YAML"),
        ("", "t.yaml:1: the file is empty"),
    ],
)
def test_bad_files_are_refused_naming_file_line_and_field(text, expected):
    with pytest.raises(TokensFileError) as caught:
        parse_tokens_file(text, "t.yaml")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_token_pasted_instead_of_its_hash_is_not_repeated_in_the_error():
    secret = "my-real-control-token-do-not-log"
    with pytest.raises(TokensFileError) as caught:
        parse_tokens_file(GOOD.replace(ANA, secret), "t.yaml")
    assert secret not in str(caught.value)
    assert "not the token itself" in str(caught.value)


def test_an_unreadable_file_is_named(tmp_path: Path):
    with pytest.raises(TokensFileError, match=r"missing.yaml: cannot read: No such file"):
        load_tokens_file(tmp_path / "missing.yaml")
