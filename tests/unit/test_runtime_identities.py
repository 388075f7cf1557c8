"""Who may use the control API, as the agent reads it at start: control.tokens_file and/or the single token."""

from pathlib import Path

import pytest

from agent.config import ControlSection, load_config
from agent.http.identities import Role, token_sha256
from agent.runtime import StartupError, read_identities
from tests.unit.test_config import GOOD

ENV = "ROLLBACK_AGENT_TEST_TOKEN"


def tokens_file(tmp_path: Path, *entries: tuple[str, str, str]) -> Path:
    path = tmp_path / "tokens.yaml"
    lines = ["tokens:"]
    for name, role, token in entries:
        lines += [f"  - name: {name}", f"    role: {role}", f"    sha256: {token_sha256(token)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV, raising=False)


def test_the_tokens_file_alone_is_enough(tmp_path: Path):
    path = tokens_file(tmp_path, ("ana", "operator", "ana-token"), ("rita", "read-only", "rita-token"))
    identities = read_identities(ControlSection(tokens_file=path, token_env=ENV))
    assert [(i.name, i.role) for i in identities] == [("ana", Role.OPERATOR), ("rita", Role.READ_ONLY)]


def test_the_single_token_joins_the_file_as_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV, "ops-token")
    path = tokens_file(tmp_path, ("ana", "operator", "ana-token"))
    identities = read_identities(ControlSection(tokens_file=path, token_env=ENV, token_name="platform"))
    assert [(i.name, i.role) for i in identities] == [("platform", Role.ADMIN), ("ana", Role.OPERATOR)]
    assert identities.authenticate(b"ops-token").name == "platform"  # type: ignore[union-attr]


def test_without_a_tokens_file_the_single_token_is_the_one_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV, "ops-token")
    identities = read_identities(ControlSection(token_env=ENV))
    assert [(i.name, i.role) for i in identities] == [("control-token", Role.ADMIN)]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", "the control API needs a bearer token: set control.tokens_file, control.token_file"),
        ("same name", "control.tokens_file and the control token (ana): identity name 'ana' is given twice"),
        (
            "same token",
            "control.tokens_file and the control token (control-token): identities 'control-token' and "
            "'bo' have the same token",
        ),
        ("bad file", "control.tokens_file: {dir}/tokens.yaml:3: tokens.0.role: Input should be"),
        ("missing file", "control.tokens_file: {dir}/absent.yaml: cannot read"),
    ],
)
def test_unusable_identities_stop_the_start_naming_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup, message):
    control = ControlSection(token_env=ENV)
    if setup == "same name":
        monkeypatch.setenv(ENV, "ops-token")
        control = ControlSection(
            tokens_file=tokens_file(tmp_path, ("ana", "admin", "x")), token_env=ENV, token_name="ana"
        )
    elif setup == "same token":
        monkeypatch.setenv(ENV, "x")
        control = ControlSection(tokens_file=tokens_file(tmp_path, ("bo", "read-only", "x")), token_env=ENV)
    elif setup == "bad file":
        path = tokens_file(tmp_path, ("ana", "admin", "x"))
        path.write_text(path.read_text().replace("admin", "root"))
        control = ControlSection(tokens_file=path, token_env=ENV)
    elif setup == "missing file":
        control = ControlSection(tokens_file=tmp_path / "absent.yaml", token_env=ENV)
    with pytest.raises(StartupError) as caught:
        read_identities(control)
    assert message.format(dir=tmp_path) in str(caught.value)


def test_tokens_file_in_the_config_is_relative_to_the_config(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD.replace("control: {token_file: token}", "control: {tokens_file: secrets/tokens.yaml}"))
    config = load_config(path)
    assert config.control.tokens_file == tmp_path / "secrets" / "tokens.yaml"
    assert config.control.token_file is None
