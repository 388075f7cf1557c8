"""Webhook credentials: bearer token(s) and/or HTTP basic auth, compared in constant time.

Alertmanager sends them from the receiver's http_config (`authorization: {type: Bearer, credentials_file: ...}` or
`basic_auth: {username: ..., password_file: ...}`). Any configured credential is accepted; each has a name that the
audit records of the decisions it triggers carry: `webhook-bearer:file`, `webhook-bearer:env:<VAR>`,
`webhook-basic:<username>`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.alerts.config import WebhookSection

REALM = "rollback-agent"


class CredentialsError(Exception):
    """A configured webhook credential cannot be read or is empty; the message says which."""


@dataclass(frozen=True, slots=True)
class WebhookCredentials:
    bearer_tokens: tuple[str, ...] = ()
    basic_auth: tuple[str, str] | None = None  # (username, password)
    # What audit records call each bearer token (same order); default `webhook-bearer`.
    bearer_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.bearer_tokens and self.basic_auth is None:
            raise ValueError("the alert webhook needs at least one credential")
        if any(not t for t in self.bearer_tokens) or (self.basic_auth is not None and not all(self.basic_auth)):
            raise ValueError("webhook credentials must not be empty")
        if self.bearer_names and len(self.bearer_names) != len(self.bearer_tokens):
            raise ValueError("one name per webhook bearer token")

    def credential(self, authorization: str) -> str | None:
        """The name of the configured credential an `Authorization` header value carries (e.g. `webhook-bearer`,
        `webhook-basic:alertmanager`), or None when it carries none."""
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.bearer_tokens:
            presented = value.encode()
            found: str | None = None
            for index, token in enumerate(self.bearer_tokens):  # no short-circuit: every token is compared
                if hmac.compare_digest(presented, token.encode()):
                    found = self.bearer_names[index] if self.bearer_names else "webhook-bearer"
            return found
        if scheme == "basic" and self.basic_auth is not None:
            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return None
            username, password = self.basic_auth
            if hmac.compare_digest(decoded, f"{username}:{password}".encode()):
                return f"webhook-basic:{username}"
        return None

    def authorized(self, authorization: str) -> bool:
        """Whether an `Authorization` header value carries one of the configured credentials."""
        return self.credential(authorization) is not None

    def challenges(self) -> tuple[str, ...]:
        """`WWW-Authenticate` values for a 401."""
        schemes = (["Bearer"] if self.bearer_tokens else []) + (["Basic"] if self.basic_auth else [])
        return tuple(f'{s} realm="{REALM}"' for s in schemes)


def _read_secret(path: Path, what: str, strip_all: bool) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CredentialsError(f"alerts.webhook.{what} {path}: cannot read: {exc.strerror}") from None
    secret = text.strip() if strip_all else text.rstrip("\r\n")
    if not secret:
        raise CredentialsError(f"alerts.webhook.{what} {path} is empty")
    return secret


def load_webhook_credentials(section: WebhookSection, environ: Mapping[str, str]) -> WebhookCredentials:
    """Read every configured credential; each configured source must yield a non-empty secret."""
    tokens: list[str] = []
    names: list[str] = []
    if section.bearer_token_file is not None:
        tokens.append(_read_secret(section.bearer_token_file, "bearer_token_file", strip_all=True))
        names.append("webhook-bearer:file")
    if section.bearer_token_env is not None:
        token = environ.get(section.bearer_token_env, "").strip()
        if not token:
            raise CredentialsError(
                f"alerts.webhook.bearer_token_env: the environment variable {section.bearer_token_env} "
                "is unset or empty"
            )
        tokens.append(token)
        names.append(f"webhook-bearer:env:{section.bearer_token_env}")
    basic: tuple[str, str] | None = None
    if section.basic_auth is not None:
        password = _read_secret(section.basic_auth.password_file, "basic_auth.password_file", strip_all=False)
        basic = (section.basic_auth.username, password)
    if not tokens and basic is None:
        raise CredentialsError(
            "alerts.webhook: the webhook needs credentials: bearer_token_file, bearer_token_env and/or basic_auth"
        )
    return WebhookCredentials(tuple(tokens), basic, tuple(names))
