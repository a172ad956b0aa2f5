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


def test_check_of_a_broken_file_names_file_line_and_column_and_exits_non_zero(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    ru = tmp_path / "issue" / "ru.md"
    ru.write_text(ru.read_text(encoding="utf-8").replace("issue: 50", "issue: fifty"), "utf-8")
    result = runner.invoke(app, ["issue", "check", str(tmp_path / "issue")], env=ENV)
    assert result.exit_code == 1
    assert "ru.md:2:8: issue must be a positive number, not 'fifty'" in result.stderr
    assert "NOT ready to send" in result.stdout


NO_BE = (
    "be.md:1:1: segment be: no be.md (missing articles: minsk-escalation) "
    "(--fallback be=en or --fallback be=ru would make it ready; or leave be out of --segments)"
)


def test_check_and_send_agree_on_an_issue_without_one_language(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    (tmp_path / "issue" / "be.md").unlink()
    issue = str(tmp_path / "issue")
    checked = runner.invoke(app, ["issue", "check", issue, "--no-spam"], env=ENV)
    assert checked.exit_code == 1, checked.output
    assert "article minsk-escalation  ok        missing   ok" in checked.stdout
    assert NO_BE in checked.stderr.splitlines()
    assert "NOT ready to send" in checked.stdout
    sent = runner.invoke(app, ["issue", "send", issue, "--no-spam"], env=ENV)
    assert sent.exit_code == 2, sent.output
    assert NO_BE in sent.stderr.splitlines()
    assert "broker" not in sent.output, "the send was refused before reaching the broker"


def test_check_is_ready_with_the_fallback_it_names(runner: CliRunner, tmp_path: Path) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    (tmp_path / "issue" / "be.md").unlink()
    issue = str(tmp_path / "issue")
    with_fallback = ["issue", "check", issue, "--no-spam", "--fallback", "be=ru"]
    assert runner.invoke(app, with_fallback, env=ENV).exit_code == 0
    without_be = ["issue", "check", issue, "--no-spam", "--segments", "en,ru"]
    assert runner.invoke(app, without_be, env=ENV).exit_code == 0


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
    assert "en.md:20:14: link '/forum-for-security-cooperation' is not absolute" in result.stderr
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


def broken(tmp_path: Path, language: str, old: str, new: str) -> str:
    """A copy of the sample issue with one edit in one language file."""
    shutil.copytree(SAMPLE, tmp_path / "issue")
    target = tmp_path / "issue" / f"{language}.md"
    text = target.read_text(encoding="utf-8")
    assert old in text, f"the sample no longer holds {old!r}"
    target.write_text(text.replace(old, new, 1), encoding="utf-8")
    return str(tmp_path / "issue")


OSCE_EN = "[OSCE event](https://www.osce.org/forum-for-security-cooperation)"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            "[OSCE event](https://www.osce.org/forum-for-security-cooperation",
            "en.md:20:1: unclosed link: no ')' after "
            "'https://www.osce.org/forum-for-security-cooperation'",
        ),
        (
            "[OSCE event](https://www.osce.org/forum for-security-cooperation)",
            "en.md:20:1: the link's URL 'https://www.osce.org/forum for-security-cooperation' "
            "contains a space",
        ),
        ("[](https://www.osce.org/)", "en.md:20:1: the link to https://www.osce.org/ has no text"),
        ("www.osce.org", "en.md:20:1: www.osce.org is not a link"),
        ("<a href='https://www.osce.org/'>OSCE</a>", "en.md:20:1: raw HTML"),
    ],
    ids=["unclosed-link", "space-in-url", "empty-link-text", "bare-www", "raw-html"],
)
def test_check_and_send_refuse_broken_markdown_with_the_same_located_message(
    runner: CliRunner, tmp_path: Path, new: str, expected: str
) -> None:
    issue = broken(tmp_path, "en", OSCE_EN, new)
    checked = runner.invoke(app, ["issue", "check", issue, "--no-spam"], env=ENV)
    assert checked.exit_code == 1, checked.output
    (line,) = [x for x in checked.stderr.splitlines() if x.startswith(expected)]
    assert "NOT ready to send" in checked.stdout
    assert "Traceback" not in checked.output
    sent = runner.invoke(app, ["issue", "send", issue, "--no-spam"], env=ENV)
    assert sent.exit_code == 2, sent.output
    assert line in sent.stderr.splitlines(), sent.stderr
    assert "broker" not in sent.output, "the send was refused before reaching the broker"


def test_an_image_without_alt_text_is_refused_with_its_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    issue = broken(tmp_path, "ru", "![Карта", "![](https://example.org/x.png) ![Карта")
    checked = runner.invoke(app, ["issue", "check", issue, "--no-spam"], env=ENV)
    assert checked.exit_code == 1, checked.output
    assert "ru.md:36:5: image https://example.org/x.png has no alt text" in checked.stderr


def test_a_typo_in_an_article_key_is_a_located_problem_with_a_suggestion_not_a_traceback(
    runner: CliRunner, tmp_path: Path
) -> None:
    shutil.copytree(SAMPLE, tmp_path / "issue")
    for language in ("en", "be", "ru"):
        key = "potash-transt" if language == "be" else "potash-transit"
        with (tmp_path / "issue" / f"{language}.md").open("a", encoding="utf-8") as file:
            file.write(f"\n# Economy\n\n## Potash {{#{key}}}\n\nLead.\n")
    issue = str(tmp_path / "issue")
    checked = runner.invoke(app, ["issue", "check", issue, "--no-spam"], env=ENV)
    assert checked.exit_code == 1, checked.output
    assert checked.exception is None or isinstance(checked.exception, SystemExit)
    expected = (
        "be.md:64:11: unknown article key 'potash-transt': en.md, ru.md use 'potash-transit' "
        "(did you mean {#potash-transit}?)"
    )
    assert checked.stderr.splitlines() == [expected]
    sent = runner.invoke(app, ["issue", "send", issue, "--no-spam"], env=ENV)
    assert sent.exit_code == 2, sent.output
    assert expected in sent.stderr.splitlines()


def test_an_impossible_date_and_a_long_week_are_reported_in_the_header(
    runner: CliRunner, tmp_path: Path
) -> None:
    issue = broken(tmp_path, "en", "2021-12-13 .. 2021-12-19", "2021-02-22 .. 2021-02-30")
    checked = runner.invoke(app, ["issue", "check", issue, "--no-spam"], env=ENV)
    assert checked.exit_code == 1
    assert "en.md:4:22: 2021-02-30 is not a date: February 2021 has 28 days" in checked.stderr, (
        checked.stderr
    )


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


def test_check_as_json_carries_the_verdict(runner: CliRunner, tmp_path: Path) -> None:
    import json

    shutil.copytree(SAMPLE, tmp_path / "issue")
    (tmp_path / "issue" / "be.md").unlink()
    result = runner.invoke(
        app, ["issue", "check", str(tmp_path / "issue"), "--no-spam", "--json"], env=ENV
    )
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)
    assert found["ready"] is False
    assert found["problems"] == [NO_BE]
    assert found["plan"] is None
    assert set(found["preflight"]) == {"en", "ru"}
