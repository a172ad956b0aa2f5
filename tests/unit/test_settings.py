"""Settings fail fast with a message that says what to set."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.settings import DEMO_KEY_FILENAME, SettingsError, demo_secret_key, load_settings


def test_production_refuses_to_start_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    monkeypatch.delenv("NEWSLETTER_MODE", raising=False)
    with pytest.raises(SettingsError, match="NEWSLETTER_SECRET_KEY"):
        load_settings()


def test_production_refuses_a_placeholder_secret_key() -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings(mode="production", secret_key="changethis", admin_token="x")


def test_production_requires_an_admin_token() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_ADMIN_TOKEN"):
        load_settings(mode="production", secret_key="k" * 40, admin_token="")


def test_demo_mode_generates_a_throwaway_key(tmp_path: Path) -> None:
    settings = load_settings(mode="demo", var_dir=tmp_path)
    assert len(settings.secret_key.get_secret_value()) >= 32


def test_from_is_read_from_newsletter_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_FROM", "Дайджэст <digest@news.example.org>")
    settings = load_settings(mode="test")
    assert settings.sender.domain == "news.example.org"
    assert settings.sender.display_name == "Дайджэст"


def test_a_sender_with_a_line_break_is_refused() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_FROM"):
        load_settings(mode="test", NEWSLETTER_FROM="A <a@example.org>\r\nBcc: x@example.org")


def test_smtp_url_is_parsed() -> None:
    target = load_settings(mode="test", smtp_url="smtps://u:p@mail.example.org").smtp
    assert (target.host, target.port, target.use_tls, target.username) == (
        "mail.example.org",
        465,
        True,
        "u",
    )


def test_public_url_must_be_http() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_PUBLIC_URL"):
        load_settings(mode="test", public_url="javascript:alert(1)")


# Production refusals: each unsafe value is refused with the variable to set in the message.

_SAFE_PRODUCTION: dict[str, object] = {
    "mode": "production",
    "secret_key": "k" * 40,
    "admin_token": "a" * 32,
    "public_url": "https://news.digest.tld",
    "NEWSLETTER_FROM": "Weekly Digest <digest@news.digest.tld>",
}


def _production(**changes: object) -> dict[str, object]:
    return {**_SAFE_PRODUCTION, **changes}


def test_production_accepts_safe_values() -> None:
    settings = load_settings(**_production())
    assert settings.public_url == "https://news.digest.tld"


def test_production_refuses_an_http_public_url_and_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match=r"NEWSLETTER_ALLOW_HTTP=true") as refused:
        load_settings(**_production(public_url="http://news.digest.tld"))
    assert "https://" in str(refused.value)


def test_production_takes_an_http_public_url_when_allowed() -> None:
    settings = load_settings(**_production(public_url="http://localhost:8000", allow_http=True))
    assert settings.public_url == "http://localhost:8000"


def test_allow_http_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_ALLOW_HTTP", "true")
    assert load_settings(**_production(public_url="http://localhost:8000")).allow_http


@pytest.mark.parametrize("token", ["x", "a" * 31])
def test_production_refuses_an_admin_token_under_32_characters(token: str) -> None:
    with pytest.raises(SettingsError, match=r"NEWSLETTER_ADMIN_TOKEN.*at least 32 characters"):
        load_settings(**_production(admin_token=token))


@pytest.mark.parametrize(
    "sender",
    [
        "Weekly Digest <digest@example.org>",
        "digest@example.com",
        "Digest <digest@news.EXAMPLE.com>",
    ],
)
def test_production_refuses_a_sender_on_an_example_domain(sender: str) -> None:
    with pytest.raises(SettingsError, match=r"NEWSLETTER_FROM.*your own domain"):
        load_settings(**_production(NEWSLETTER_FROM=sender))


def test_a_domain_merely_ending_in_example_org_is_not_refused() -> None:
    settings = load_settings(**_production(NEWSLETTER_FROM="d <d@myexample.org>"))
    assert settings.sender.domain == "myexample.org"


@pytest.mark.parametrize("mode", ["demo", "test"])
def test_demo_and_test_modes_keep_their_local_defaults(mode: str, tmp_path: Path) -> None:
    settings = load_settings(mode=mode, var_dir=tmp_path, admin_token="x")
    assert settings.public_url.startswith("http://")
    assert settings.sender.domain == "example.org"


# Demo mode: one generated key in var/, shared by every process started by hand.


def test_demo_mode_generates_a_key_into_var_with_mode_0600(tmp_path: Path) -> None:
    key = load_settings(mode="demo", var_dir=tmp_path).secret_key.get_secret_value()
    stored = tmp_path / DEMO_KEY_FILENAME
    assert stored.read_text(encoding="ascii").strip() == key
    assert len(key) >= 32
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_demo_processes_started_by_hand_share_one_key(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from shared.settings import load_settings; "
        "print(load_settings(mode='demo', var_dir=Path(sys.argv[1])).secret_key.get_secret_value())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    keys = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(keys) == 1, f"each process made its own key: {keys}"
    assert len(keys.pop()) >= 32


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: demo_secret_key(tmp_path), range(16)))
    assert len(keys) == 1
    assert [p.name for p in tmp_path.iterdir()] == [DEMO_KEY_FILENAME], "temporary files left"


def test_an_unusable_key_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / DEMO_KEY_FILENAME).write_text("short\n", encoding="ascii")
    key = demo_secret_key(tmp_path)
    assert len(key) >= 32
    assert demo_secret_key(tmp_path) == key


def test_a_key_set_in_the_environment_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = load_settings(mode="demo", var_dir=tmp_path, secret_key="s" * 40)
    assert settings.secret_key.get_secret_value() == "s" * 40
    assert not (tmp_path / DEMO_KEY_FILENAME).exists()


def test_test_mode_keeps_a_throwaway_key_and_writes_nothing(tmp_path: Path) -> None:
    first = load_settings(mode="test", var_dir=tmp_path).secret_key.get_secret_value()
    second = load_settings(mode="test", var_dir=tmp_path).secret_key.get_secret_value()
    assert first != second
    assert not any(tmp_path.iterdir())


def test_an_unwritable_var_dir_in_demo_mode_says_what_to_set(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="ascii")
    with pytest.raises(SettingsError, match=r"NEWSLETTER_VAR_DIR.*NEWSLETTER_SECRET_KEY"):
        load_settings(mode="demo", var_dir=blocked / "var")
