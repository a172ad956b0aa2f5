"""The editors' commands: check prints the matrix, preview writes real files, send refuses early."""

from __future__ import annotations

import email
import shutil
from email import policy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-issue"
ENV = {
    "NEWSLETTER_MODE": "test",
    "NEWSLETTER_DATABASE_URL": "sqlite:///:memory:",
    "NEWSLETTER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/unused",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_check_prints_the_readiness_matrix_and_exits_zero(runner: CliRunner) -> None:
    result = runner.invoke(app, ["issue", "check", str(SAMPLE), "--no-spam"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "article minsk-escalation  ok        ok        ok" in result.output
    assert "ready to send" in result.output


def test_check_of_a_broken_file_names_file_and_line_and_exits_two(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    ru = tmp_path / "issue" / "ru.md"
    ru.write_text(ru.read_text(encoding="utf-8").replace("issue: 50", "issue: fifty"), "utf-8")
    result = runner.invoke(app, ["issue", "check", str(tmp_path / "issue")], env=ENV)
    assert result.exit_code == 2
    assert "ru.md:2: issue must be a positive number, not 'fifty'" in result.output


def test_check_of_an_issue_without_one_language_says_that_segment_needs_a_fallback(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    (tmp_path / "issue" / "be.md").unlink()
    result = runner.invoke(app, ["issue", "check", str(tmp_path / "issue"), "--no-spam"], env=ENV)
    assert result.exit_code == 0, result.output  # the en and ru editions are ready
    assert "article minsk-escalation  ok        missing   ok" in result.output
    assert (
        "note: no be.md: a send to the be segment needs --fallback be=<language>" in result.output
    )


def test_check_of_an_issue_with_a_relative_link_is_not_ready(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    en = tmp_path / "issue" / "en.md"
    en.write_text(
        en.read_text(encoding="utf-8").replace("https://www.osce.org/", "/"), encoding="utf-8"
    )
    result = runner.invoke(app, ["issue", "check", str(tmp_path / "issue"), "--no-spam"], env=ENV)
    assert result.exit_code == 1, result.output
    assert (
        "problem: en.md:20: link '/forum-for-security-cooperation' is not absolute" in result.output
    )
    assert "NOT ready to send" in result.output


def test_preview_writes_html_text_and_a_complete_eml_per_language(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["issue", "preview", str(SAMPLE), "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    for language in ("en", "be", "ru"):
        html = (tmp_path / f"{language}.html").read_text(encoding="utf-8")
        assert f'<html lang="{language}"' in html
        assert "@@NL_" not in html
        assert "@@NL_" not in (tmp_path / f"{language}.txt").read_text(encoding="utf-8")
        message = email.message_from_bytes(
            (tmp_path / f"{language}.eml").read_bytes(), policy=policy.default
        )
        assert [d for part in message.walk() for d in part.defects] == []
        assert message["Content-Language"] == language
        assert {p.get_content_type() for p in message.walk()} >= {"text/plain", "text/html"}
        assert message["List-Unsubscribe"].startswith("<http")


def test_send_refuses_a_segment_without_edition_before_touching_the_broker(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    (tmp_path / "issue" / "be.md").unlink()
    result = runner.invoke(app, ["issue", "send", str(tmp_path / "issue"), "--no-spam"], env=ENV)
    assert result.exit_code == 2
    assert "segment be: no be.md (missing articles: minsk-escalation)" in result.output


def test_send_refuses_a_malformed_fallback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["issue", "send", str(SAMPLE), "--fallback", "be:ru"], env=ENV)
    assert result.exit_code == 2
    assert "must be SEGMENT=LANGUAGE" in result.output


def test_bench_render_prints_its_figures_as_json(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "render",
            "--json",
            "--path",
            str(SAMPLE),
            "--recipients",
            "300",
            "--full-renders",
            "3",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    import json

    figures = json.loads(result.output)
    assert figures["editions"] == 3
    assert figures["fill_per_recipient_us"] > 0
    assert figures["full_render_per_recipient_ms"] > 0
    assert set(figures["html_bytes"]) == {"en", "be", "ru"}


def test_send_says_so_when_the_broker_cannot_be_reached_and_forgets_the_request(
    runner: CliRunner, sqlite_url: str
) -> None:
    env = {**ENV, "NEWSLETTER_DATABASE_URL": sqlite_url}
    result = runner.invoke(app, ["issue", "send", str(SAMPLE), "--no-spam"], env=env)
    assert result.exit_code == 2
    assert "the broker did not take the send request" in result.output
    # Nothing went out, so the issue is not "already sent": the next try is a first send again.
    import sqlite3

    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT COUNT(*) FROM issue_send").fetchone() == (0,)


def test_send_without_a_database_refuses_without_a_traceback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["issue", "send", str(SAMPLE), "--no-spam"], env=ENV)
    assert result.exit_code == 2
    assert "error: the database did not answer" in result.output
