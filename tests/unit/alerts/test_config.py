from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.alerts.config import AlertsConfig


def _errors(raw: dict) -> str:
    with pytest.raises(ValidationError) as err:
        AlertsConfig.model_validate(raw)
    return str(err.value)


def test_defaults_disable_both_sources():
    config = AlertsConfig()
    assert not config.webhook.enabled and config.alertmanager.urls == []
    assert config.webhook.max_body_bytes == 1024 * 1024
    assert config.alertmanager.poll_interval_s == 2.0 and config.alertmanager.backoff_max_s == 30.0
    assert config.routes == []


def test_an_enabled_webhook_needs_credentials():
    assert "needs credentials" in _errors({"webhook": {"enabled": True}})
    AlertsConfig.model_validate({"webhook": {"enabled": True, "bearer_token_env": "TOKEN"}})
    AlertsConfig.model_validate({"webhook": {"enabled": True, "basic_auth": {"username": "am", "password_file": "pw"}}})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"routes": [{"match": {"a": "b"}, "action": "explode"}]}, "routes.0.action"),
        ({"routes": [{"match": {"a": {"regex": "("}}, "action": "hold"}]}, "invalid regular expression"),
        ({"routes": [{"match": {"bad-label": "x"}, "action": "hold"}]}, "routes.0.match.bad-label"),
        ({"routes": [{"match": {}, "action": "hold", "typo": 1}]}, "Extra inputs are not permitted"),
        ({"alertmanager": {"urls": ["alertmanager:9093"]}}, "must be an http(s) URL"),
        ({"alertmanager": {"urls": ["http://a:9093", "http://a:9093/"]}}, "duplicate URL"),
        ({"alertmanager": {"poll_interval_s": 0}}, "greater than 0"),
        ({"alertmanager": {"poll_interval_s": 10, "backoff_max_s": 5}}, "at least poll_interval_s"),
        ({"webhook": {"max_body_bytes": 10}}, "greater than or equal to 1024"),
    ],
)
def test_bad_config_names_the_field(raw, expected):
    assert expected in _errors(raw)


def test_urls_lose_their_trailing_slash():
    config = AlertsConfig.model_validate({"alertmanager": {"urls": ["http://127.0.0.1:9093/", "https://am/prefix"]}})
    assert config.alertmanager.urls == ["http://127.0.0.1:9093", "https://am/prefix"]


def test_relative_secret_files_resolve_against_the_config_directory(tmp_path: Path):
    config = AlertsConfig.model_validate(
        {
            "webhook": {
                "enabled": True,
                "bearer_token_file": "token",
                "basic_auth": {"username": "am", "password_file": "/abs/pw"},
            }
        }
    ).resolve_paths(tmp_path)
    assert config.webhook.bearer_token_file == tmp_path / "token"
    assert config.webhook.basic_auth is not None and config.webhook.basic_auth.password_file == Path("/abs/pw")
