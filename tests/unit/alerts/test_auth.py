import base64
from pathlib import Path

import pytest

from agent.alerts.auth import CredentialsError, WebhookCredentials, load_webhook_credentials
from agent.alerts.config import WebhookSection


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BOTH = WebhookCredentials(bearer_tokens=("s3cret",), basic_auth=("am", "p:w d"))


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer  s3cret ", _basic("am", "p:w d")])
def test_right_credentials_pass(header):
    assert BOTH.authorized(header)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer wrong",
        "Bearer s3cret2",
        "Token s3cret",
        _basic("am", "wrong"),
        _basic("other", "p:w d"),
        "Basic !!!not-base64",
        "Basic s3cret",
        "Basic ümlaut",
    ],
)
def test_missing_or_wrong_credentials_fail(header):
    assert not BOTH.authorized(header)


def test_only_configured_schemes_are_accepted_and_challenged():
    bearer_only = WebhookCredentials(bearer_tokens=("s3cret",))
    assert not bearer_only.authorized(_basic("am", "s3cret"))
    assert bearer_only.challenges() == ('Bearer realm="rollback-agent"',)
    assert BOTH.challenges() == ('Bearer realm="rollback-agent"', 'Basic realm="rollback-agent"')
    with pytest.raises(ValueError):
        WebhookCredentials()


def test_load_from_files_and_environment(tmp_path: Path):
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "pw").write_text(" pass word \n")
    section = WebhookSection.model_validate(
        {
            "enabled": True,
            "bearer_token_file": tmp_path / "token",
            "bearer_token_env": "HOOK_TOKEN",
            "basic_auth": {"username": "am", "password_file": tmp_path / "pw"},
        }
    )
    creds = load_webhook_credentials(section, {"HOOK_TOKEN": "from-env"})
    assert creds.bearer_tokens == ("s3cret", "from-env")
    assert creds.basic_auth == ("am", " pass word ")
    assert creds.authorized("Bearer from-env") and creds.authorized("Bearer s3cret")


def test_unreadable_empty_or_unset_secrets_are_startup_errors(tmp_path: Path):
    (tmp_path / "empty").write_text("\n")
    cases = [
        ({"bearer_token_file": tmp_path / "missing"}, "cannot read"),
        ({"bearer_token_file": tmp_path / "empty"}, "is empty"),
        ({"bearer_token_env": "UNSET_VAR"}, "UNSET_VAR is unset or empty"),
        ({"basic_auth": {"username": "am", "password_file": tmp_path / "empty"}}, "password_file"),
    ]
    for raw, expected in cases:
        section = WebhookSection.model_validate({"enabled": True, **raw})
        with pytest.raises(CredentialsError, match=expected):
            load_webhook_credentials(section, {})
