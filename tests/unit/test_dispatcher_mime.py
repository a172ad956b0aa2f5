"""Message bytes built once per edition, filled per recipient."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.header import decode_header, make_header

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.settings import load_dispatcher_settings
from shared import message_ids
from shared.messaging import placeholders

RU_PARAGRAPH = "Совет собрался во вторник и утвердил бюджет новой библиотеки. " * 40


def composer() -> Composer:
    return Composer(settings=load_dispatcher_settings(mode="test", secret_key="k" * 40))


def build(language: str = "ru", html: str | None = None) -> mime.MessageTemplate:
    c = composer()
    envelope = c.envelope(subject="Дайджэст №48: навіны", language=language, campaign="abc")
    body = html or (
        f'<html lang="{language}"><p>{RU_PARAGRAPH}</p>'
        f'<a href="{placeholders.UNSUBSCRIBE_URL}">x</a> {placeholders.RECIPIENT}</html>'
    )
    text = f"{RU_PARAGRAPH}\n{placeholders.UNSUBSCRIBE_URL}\n"
    return mime.build_template(envelope=envelope, text=text, html_body=body)


def render(template: mime.MessageTemplate, address: str = "o'neil&co@example.org") -> bytes:
    c = composer()
    return c.render(template, c.values(Recipient(7, 3, address, "d7.abcdef12")))


def test_a_rendered_mail_parses_without_defects_and_has_every_list_header() -> None:
    data = render(build())
    mail = message_from_bytes(data, policy=policy.default)
    assert not mail.defects
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "Feedback-ID"):
        assert mail[header], f"{header} missing"
    assert str(mail["Subject"]) == "Дайджэст №48: навіны"
    assert "=?utf-8?" in data.split(b"\r\n\r\n")[0].decode().lower(), "subject RFC 2047"
    assert mail["Content-Language"] == "ru"
    assert mail["Message-ID"].startswith("<d7.abcdef12.")
    assert mail["Message-ID"].endswith("@example.org>")
    assert (
        message_ids.delivery_from_message_id(secret_key="k" * 40, message_id=mail["Message-ID"])
        == 7
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].startswith("<http")
    assert "mailto:unsubscribe+3-" in mail["List-Unsubscribe"]
    assert "Еженедельный дайджест" in str(mail["From"])


def test_cyrillic_bodies_go_8bit_with_every_line_under_998_bytes() -> None:
    data = render(build())
    assert b"Content-Transfer-Encoding: 8bit" in data
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    assert len(data) < 2 * len(RU_PARAGRAPH.encode()) + 6000, "no quoted-printable bloat"


def test_markers_are_replaced_and_escaped_in_html() -> None:
    mail = message_from_bytes(render(build()), policy=policy.default)
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "@@NL_" not in html + text
    assert "o&#x27;neil&amp;co@example.org" in html
    assert "/unsubscribe?token=" in text


def test_an_unbreakable_line_falls_back_to_base64_per_recipient() -> None:
    html = "<p>" + "x" * 3000 + f"</p>{placeholders.RECIPIENT}"
    data = render(build(html=html))
    assert b"Content-Transfer-Encoding: base64" in data
    mail = message_from_bytes(data, policy=policy.default)
    assert "o&#x27;neil&amp;co@example.org" in mail.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_wrap_lines_breaks_at_spaces_and_counts_markers_at_full_size() -> None:
    line = " ".join(["word"] * 400) + " " + placeholders.UNSUBSCRIBE_URL
    wrapped = mime.wrap_lines(line)
    assert wrapped is not None
    lines = wrapped.split("\r\n")
    assert len(lines) > 1
    assert all(len(x.encode()) + (400 if placeholders.PREFIX in x else 0) <= 996 for x in lines), (
        "a line could pass 998 bytes once its marker is filled"
    )
    assert wrapped.replace("\r\n", " ") == line


def test_the_template_is_built_once_and_rendering_only_joins_bytes() -> None:
    template = build()
    first, second = render(template, "a@example.org"), render(template, "b@example.org")
    assert first != second
    assert b"a@example.org" in first
    assert b"To: a@example.org" not in second  # (a signed Message-ID may end in "a@...")


def test_the_date_header_is_now_in_rfc_5322_form_and_follows_the_clock() -> None:
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    from services.dispatcher.composer import DateHeader

    class Clock:
        now = 1_795_000_000.4

    header = DateHeader(clock=lambda: Clock.now)
    first = header.now()
    assert parsedate_to_datetime(first) == datetime.fromtimestamp(1_795_000_000, UTC)
    Clock.now += 0.5
    assert header.now() == first, "formatted once per second"
    Clock.now += 1.0
    assert parsedate_to_datetime(header.now()) == datetime.fromtimestamp(1_795_000_001, UTC)


def _from_of(settings_overrides: dict[str, str], language: str) -> tuple[str, str, str]:
    """The parsed display name, address and List-Id phrase of a mail built with the settings."""
    c = Composer(
        settings=load_dispatcher_settings(mode="test", secret_key="k" * 40, **settings_overrides)
    )
    envelope = c.envelope(subject="Issue 51", language=language, campaign="abc")
    template = mime.build_template(envelope=envelope, text="x\n", html_body="<p>x</p>")
    data = c.render(template, c.values(Recipient(7, 3, "reader@example.org", "d7.abcdef12")))
    mail = message_from_bytes(data, policy=policy.default)
    assert not mail.defects, mail.defects
    head = data.split(b"\r\n\r\n")[0]
    assert head.isascii(), "every header on the wire is ASCII (RFC 2047 for the rest)"
    for line in head.split(b"\r\n"):
        for word in line.split():
            if word.startswith(b"=?"):
                assert len(word) <= 75, f"encoded word over RFC 2047's 75 characters: {word!r}"
    (address,) = mail["From"].addresses
    return _decoded(data, "From"), address.addr_spec, _decoded(data, "List-Id")


def _decoded(data: bytes, name: str) -> str:
    """A header's phrase as RFC 2047 reads it: white space between two encoded words is not
    text. (``policy.default`` keeps it inside a display name: it reads ``EmailMessage``'s own
    folding of a long Cyrillic name back with extra spaces, a quirk of its parser.)"""
    raw = str(message_from_bytes(data, policy=policy.compat32)[name])
    decoded = str(make_header(decode_header(re.sub(r"\r?\n[ \t]", " ", raw))))
    phrase = decoded.rpartition(" <")[0]
    if phrase.startswith('"'):
        phrase = re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return phrase


def test_the_sender_name_is_the_seeds_name_per_language_while_the_setting_is_the_default() -> None:
    assert _from_of({}, "be")[0] == "Штотыднёвы дайджэст"
    assert _from_of({}, "ru")[0] == "Еженедельный дайджест"
    assert _from_of({}, "en")[:2] == ("Weekly Digest", "digest@example.org")


def test_the_sender_name_follows_the_publication_name_in_every_language() -> None:
    name = 'Беларусь, "Аналітыка" і каментарыі: штотыднёвы агляд падзей у краіне і вакол яе'
    for language in ("en", "be", "ru"):
        display, address, list_id = _from_of({"publication_name": name}, language)
        assert display == name, f"{language}: {display!r}"
        assert address == "digest@example.org"
        assert list_id == name


def test_an_ascii_name_with_a_comma_and_quotes_is_quoted_not_split() -> None:
    name = 'Minsk, "Weekly" Review'
    display, address, list_id = _from_of({"publication_name": name}, "ru")
    assert (display, address) == (name, "digest@example.org")
    assert list_id == name


def test_a_display_name_of_the_from_setting_is_kept_when_no_publication_name_is_set() -> None:
    overrides = {"NEWSLETTER_FROM": "Minsk Review <news@example.org>"}
    assert _from_of(overrides, "be")[:2] == ("Minsk Review", "news@example.org")
