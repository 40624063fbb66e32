"""Redaction: which keys are secret, credentials in URLs, values that hold nothing (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from django_taskqueue.conf import DEFAULT_REDACT_KEYS
from django_taskqueue.serialization import SecretKeys, redact, redact_text

MASK = "********"


def masked(value: Any, keys: tuple[str, ...] = DEFAULT_REDACT_KEYS) -> Any:
    return redact(value, keys, MASK)[0]


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "DB_PASSWORD",
        "dbpassword",
        "passwd",
        "passphrase",
        "pwd",
        "db_pwd",
        "api_key",
        "api-key",
        "apiKey",
        "API_KEY",
        "X-Api-Key",
        "x_api_key",
        "private-key",
        "privateKey",
        "ssh_private_key",
        "auth",
        "Auth",
        "X-Auth-Token",
        "basic_auth",
        "authToken",
        "HTTPAuth",
        "Authorization",
        "token",
        "access_token",
        "refreshToken",
        "secret",
        "client_secret",
        "SECRET_KEY",
        "credentials",
        "aws_credentials",
        "cookie",
        "Set-Cookie",
        "session",
        "sessionid",
    ],
)
def test_secret_keys_match_whatever_the_case_and_separators(key: str) -> None:
    assert key in SecretKeys(DEFAULT_REDACT_KEYS)


@pytest.mark.parametrize(
    "key",
    ["author", "authority", "oauth", "user", "username", "scope", "path", "quality", "pass"],
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    # "auth" and "pwd" are short: they must be a whole word of the key.
    assert key not in SecretKeys(DEFAULT_REDACT_KEYS)


def test_a_secret_value_is_replaced_whole_at_any_depth() -> None:
    value = {
        "user": "bob",
        "X-Api-Key": "k",
        "nested": [{"Private-Key": {"pem": "-----BEGIN"}}, {"scope": "read"}],
    }
    out, changed = redact(value, DEFAULT_REDACT_KEYS, MASK)
    assert changed
    assert out == {
        "user": "bob",
        "X-Api-Key": MASK,
        "nested": [{"Private-Key": MASK}, {"scope": "read"}],
    }
    assert value["X-Api-Key"] == "k"  # a copy: the caller's data is untouched


def test_a_secret_key_whose_value_holds_nothing_is_kept() -> None:
    value: dict[str, Any] = {
        "token": None,
        "use_auth": True,
        "password": "",
        "cookies": [],
        "session": {},
    }
    assert redact(value, DEFAULT_REDACT_KEYS, MASK) == (value, False)


def test_nothing_to_redact_is_unchanged() -> None:
    value: dict[str, Any] = {"width": 800, "tags": ["a", "b"], "ratio": 1.5, "on": False}
    assert redact(value, DEFAULT_REDACT_KEYS, MASK) == (value, False)


def test_more_than_the_kept_depth_is_replaced_whole() -> None:
    deep: Any = "postgres://u:pw@h/db"
    for _ in range(40):
        deep = {"x": deep}
    out, changed = redact(deep, DEFAULT_REDACT_KEYS, MASK)
    assert changed
    assert "pw@" not in str(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://u:pw@h/db", "postgres://u:********@h/db"),
        (
            "postgresql://app:s3cr3t@db.internal:5432/app",
            "postgresql://app:********@db.internal:5432/app",
        ),
        ("redis://:pw@cache:6379/0", "redis://:********@cache:6379/0"),
        ("amqp://u:p@ss@rabbit//", "amqp://u:********@rabbit//"),
        ("postgres://u:pa/ss@h/db", "postgres://u:********@h/db"),
        (
            'could not connect to "postgres://u:pw@h/db": timeout',
            'could not connect to "postgres://u:********@h/db": timeout',
        ),
        (
            "from https://a:1@x.test/ then ftp://b:2@y.test/f",
            "from https://a:********@x.test/ then ftp://b:********@y.test/f",
        ),
        (
            "https://api.test/v1?api_key=abc&q=cats&access_token=t#top",
            "https://api.test/v1?api_key=********&q=cats&access_token=********#top",
        ),
        ("https://user@host.test/repo", "https://user@host.test/repo"),
        ("https://host.test:8443/a@b", "https://host.test:8443/a@b"),
        ("http://[::1]:8000/@user", "http://[::1]:8000/@user"),
        ("https://host.test/path?q=1", "https://host.test/path?q=1"),
        ("no url: user:pw@host", "no url: user:pw@host"),
    ],
)
def test_credentials_in_urls_are_masked(text: str, expected: str) -> None:
    out, changed = redact_text(text, DEFAULT_REDACT_KEYS, MASK)
    assert out == expected
    assert changed is (out != text)


def test_urls_are_masked_in_every_string_of_a_value() -> None:
    value = {"dsn": "postgres://u:pw@h/db", "urls": ["redis://:x@r/0", "https://ok.test/"]}
    assert masked(value) == {
        "dsn": "postgres://u:********@h/db",
        "urls": ["redis://:********@r/0", "https://ok.test/"],
    }
    assert masked(["mysql://root:toor@localhost/x"]) == ["mysql://root:********@localhost/x"]


def test_the_terms_are_given_by_the_caller() -> None:
    assert masked({"pin": "1234", "password": "x"}, ("pin",)) == {"pin": MASK, "password": "x"}
    assert "user_pin" in SecretKeys(("pin",))
    assert "spinner" not in SecretKeys(("pin",))
