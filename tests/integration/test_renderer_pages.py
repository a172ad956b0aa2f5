"""The renderer's pages over HTTP: the archive on its internal port, the editor
page behind the admin token, and the admin API that starts sends with a confirmation step."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend, RenderIssue, decode
from shared.messaging.topology import DISPATCHER_PLANNER, RENDER_ISSUE
from shared.settings import Settings
from tests.integration.renderer_harness import (
    RunningRenderer,
    running_renderer,
    sample_sources,
    take,
)

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token"}


async def sent_issue(renderer: RunningRenderer, *, test_to: str | None = None) -> str:
    command = RenderIssue(
        send_id=str(uuid.uuid4()),
        issue_key="issue-50",
        sources=sample_sources("en", "be", "ru"),
        segments=["en", "be", "ru"],
        test_to=test_to,
    )
    publisher = await Publisher.open(renderer.connection)
    await publisher.publish(command, routing_key=RENDER_ISSUE)
    await publisher.close()
    found = await take(
        renderer.connection,
        DISPATCHER_PLANNER.name,
        lambda m: json.loads(m.body).get("send_id") == command.send_id,
    )
    assert found, "the issue was not rendered"
    return command.send_id


async def test_the_renderer_serves_the_archive_with_links_on_the_public_origin(
    settings: Settings, tmp_path: Path
) -> None:
    """On its internal port; readers reach it through the public origin
    (tests/integration/test_public_archive.py covers the archive as they see it)."""
    async with running_renderer(settings, tmp_path) as renderer:
        send_id = await sent_issue(renderer)
        test_id = await sent_issue(renderer, test_to="editor@example.org")
        async with renderer.client() as client:
            view = await client.get(f"/archive/be/{send_id}")
            archive = await client.get("/be/")
            feed = await client.get("/be/feed.atom")
            test_view = await client.get(f"/archive/be/{test_id}")
            missing = await client.get(f"/archive/be/{uuid.uuid4()}")
    public = settings.public_url.rstrip("/")
    assert (view.status_code, view.headers["location"]) == (301, f"{public}/be/issues/50")
    assert archive.status_code == 200
    assert "Архіў Штотыднёвага дайджэста" in archive.text
    assert f'href="{public}/be/issues/50"' in archive.text
    assert renderer.base_url not in archive.text + feed.text, "no link to the internal port"
    root = ElementTree.fromstring(feed.content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    ids = [e.findtext("a:id", namespaces=ns) for e in root.findall("a:entry", ns)]
    assert ids == [f"{public}/be/issues/50"], "the test send is not in the feed"
    assert test_view.status_code == 200, "a test mail's view-in-browser link still works"
    assert 'content="noindex"' in test_view.text
    assert missing.status_code == 404
    assert "Старонка не знойдзена" in missing.text


async def test_the_editor_page_needs_the_admin_token_and_checks_csrf(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        assert 'name="token"' in (await client.get("/editor")).text
        refused = await client.post("/editor/login", data={"token": "wrong"})
        assert (await client.post("/editor/login", data={"token": "жэтон"})).status_code == 403
        assert (
            await client.get("/admin/api/issues", headers={"Authorization": "Bearer я".encode()})
        ).status_code == 401
        assert refused.status_code == 403
        assert "nl_editor" not in refused.headers.get("set-cookie", "")
        assert (await client.get("/editor/issue/sample-issue")).status_code == 303
        signed_in = await client.post("/editor/login", data={"token": "test-admin-token"})
        assert signed_in.status_code == 303
        listing = await client.get("/editor")
        assert "sample-issue" in listing.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', listing.text)
        assert csrf is not None
        forged = await client.post("/editor/upload", data={"name": "x", "csrf": "forged"})
        assert forged.status_code == 403
        upload = await client.post(
            "/editor/upload",
            data={"name": "uploaded", "csrf": csrf.group(1)},
            files={"ru": ("ru.md", (renderer_sample("ru")).encode(), "text/markdown")},
        )
        assert upload.status_code == 303
        assert upload.headers["location"] == "/editor/issue/uploaded"
        issue = await client.get("/editor/issue/uploaded")
        assert "Article minsk-escalation" in issue.text
        assert "missing" in issue.text
        # the same verdict as ``issue check`` and ``issue send``: be.md and en.md need a fallback
        assert (
            "be.md:1:1: segment be: no be.md (missing articles: minsk-escalation) "
            "(--fallback be=ru would make it ready; or leave be out of --segments)"
        ) in issue.text
        checked = await client.get("/editor/issue/sample-issue", params={"spam": "1"}, timeout=90)
        assert re.search(
            r'<td>ru</td><td data-label="HTML">[\d.]+ KB</td>'
            r'<td data-label="SpamAssassin">-?0\.\d</td>',
            checked.text,
        ), checked.text
        preview = await client.get("/editor/issue/sample-issue/preview/ru.html")
        assert preview.status_code == 200
        assert "@@NL_" not in preview.text
        review = await client.post(
            "/editor/issue/sample-issue/send",
            data={"csrf": csrf.group(1), "segments": ["en", "ru"], "fallbacks": ""},
        )
        assert review.status_code == 200
        assert "Start the send of sample-issue?" in review.text
        assert 'name="confirm" value="yes"' in review.text
        refused_send = await client.post(
            "/editor/issue/uploaded/send", data={"csrf": csrf.group(1), "segments": ["en"]}
        )
        assert refused_send.status_code == 422
        assert "segment en: no en.md" in refused_send.text


EDITOR_HEADERS = {
    "content-security-policy": "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-content-type-options": "nosniff",
}


def assert_public_headers(response: httpx.Response) -> None:
    for header, expected in EDITOR_HEADERS.items():
        assert expected in response.headers.get(header, ""), (
            f"{response.request.method} {response.request.url.path} "
            f"({response.status_code}) lacks {header}: {expected}"
        )


async def test_the_editor_pages_speak_the_editors_language_and_send_the_public_headers(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        # Accept-Language chooses, as on the public pages; ?lang= wins and is remembered.
        login = await client.get("/editor", headers={"accept-language": "be-BY,ru;q=0.8"})
        assert login.status_code == 200
        assert '<html lang="be">' in login.text
        assert "Уваход у рэдактар" in login.text
        assert_public_headers(login)
        ru = await client.get("/editor", params={"lang": "ru"})
        assert "Вход в редактор" in ru.text
        assert ru.cookies.get("nl_editor_lang") == "ru"
        wrong = await client.post("/editor/login", data={"token": "wrong"})
        assert wrong.status_code == 403
        assert "Неверный токен." in wrong.text, "the choice holds on the next page"
        assert_public_headers(wrong)
        await client.post("/editor/login", data={"token": "test-admin-token"})
        listing = await client.get("/editor")
        assert "Загрузить выпуск" in listing.text
        assert 'href="/editor?lang=be"' in listing.text, "the switch leads to the same page"
        assert_public_headers(listing)
        issue = await client.get("/editor/issue/sample-issue", params={"lang": "be"})
        assert '<html lang="be">' in issue.text
        for words in ("Гатоўнасць", "Артыкул minsk-escalation", "Тэставая рассылка"):
            assert words in issue.text, f"{words!r} missing from the Belarusian issue page"
        assert "Weekly Digest" not in issue.text, "the sample name is translated"
        assert "Штотыднёвы дайджэст" in issue.text
        assert_public_headers(issue)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', issue.text)
        assert csrf is not None
        review = await client.post(
            "/editor/issue/sample-issue/send",
            data={"csrf": csrf.group(1), "segments": ["en"], "fallbacks": ""},
        )
        assert review.status_code == 200
        assert "Пачаць рассылку sample-issue?" in review.text
        assert 'href="/editor/issue/sample-issue?lang=ru"' in review.text
        assert_public_headers(review)
        forged = await client.post("/editor/upload", data={"name": "x", "csrf": "forged"})
        assert forged.status_code == 403
        assert "Гэтая форма састарэла" in forged.text, "the last choice (be) holds"
        assert_public_headers(forged)
        missing = await client.get("/editor/issue/no-such-issue")
        assert missing.status_code == 404
        assert_public_headers(missing)
        preview = await client.get("/editor/issue/sample-issue/preview/be.html")
        assert_public_headers(preview)


def renderer_sample(language: str) -> str:
    return sample_sources(language)[language]


async def test_the_admin_api_shows_readiness_and_starts_a_send_only_when_confirmed(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        assert (await client.get("/admin/api/issues")).status_code == 401
        stored = await client.put(
            "/admin/api/issues/api-issue",
            headers=ADMIN,
            json={"sources": sample_sources("en", "ru")},
        )
        assert stored.status_code == 200
        # The verdict ``issue check`` gives: no be.md and no fallback is not ready.
        assert stored.json()["ready"] is False
        assert stored.json()["problems"] == [
            "be.md:1:1: segment be: no be.md (missing articles: minsk-escalation) "
            "(--fallback be=en or --fallback be=ru would make it ready; or leave be out of "
            "--segments)"
        ]
        with_fallback = await client.get(
            "/admin/api/issues/api-issue", headers=ADMIN, params={"fallback": "be=ru"}
        )
        assert with_fallback.json()["ready"] is True, with_fallback.json()
        assert with_fallback.json()["plan"] == {"en": "en", "be": "ru", "ru": "ru"}
        assert (
            "api-issue" in (await client.get("/admin/api/issues", headers=ADMIN)).json()["issues"]
        )
        refused = await client.post(
            "/admin/api/issues/api-issue/sends", headers=ADMIN, json={"segments": ["be"]}
        )
        assert refused.status_code == 422
        assert "segment be: no be.md" in refused.json()["detail"]
        assert refused.json()["problems"] == stored.json()["problems"]
        review = await client.post(
            "/admin/api/issues/api-issue/sends",
            headers=ADMIN,
            json={"segments": ["en", "be"], "fallbacks": {"be": "ru"}},
        )
        assert review.status_code == 200
        assert review.json()["confirm_required"] is True
        assert [(s["segment"], s["edition"]) for s in review.json()["segments"]] == [
            ("en", "en"),
            ("be", "ru"),
        ]
        started = await client.post(
            "/admin/api/issues/api-issue/sends",
            headers=ADMIN,
            json={"segments": ["en", "be"], "fallbacks": {"be": "ru"}, "confirm": True},
        )
        assert started.status_code == 202
        send_id = started.json()["send_id"]
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == send_id,
        )
    assert found, "the confirmed send was not rendered and planned"
    assert decode(PlanSend, found[0].body).fallbacks == {"be": "ru"}


async def test_editor_sessions_expire_and_wrong_tokens_are_throttled(
    settings: Settings, tmp_path: Path
) -> None:
    from itsdangerous import TimestampSigner

    from services.renderer import editor_pages

    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        signed_in = await client.post("/editor/login", data={"token": "test-admin-token"})
        assert signed_in.status_code == 303
        cookie = signed_in.cookies["nl_editor"]
        assert f"Max-Age={editor_pages.SESSION_MAX_AGE_S}" in signed_in.headers["set-cookie"]
        assert "sample-issue" in (await client.get("/editor")).text
        # A cookie signed with another key, or older than the session's life, is refused.
        client.cookies.set("nl_editor", cookie[:-4] + "AAAA")
        assert 'name="token"' in (await client.get("/editor")).text
        secret = settings.secret_key.get_secret_value().encode()
        old = TimestampSigner(secret, salt=b"renderer-editor-session")
        old.get_timestamp = lambda: 1_000_000_000  # type: ignore[method-assign]
        client.cookies.set("nl_editor", old.sign(b"editor").decode())
        assert 'name="token"' in (await client.get("/editor")).text
        client.cookies.clear()
        # Five wrong tokens, then even the right one waits.
        for _ in range(editor_pages.LOGIN_FAILURES_ALLOWED):
            assert (await client.post("/editor/login", data={"token": "guess"})).status_code == 403
        throttled = await client.post("/editor/login", data={"token": "test-admin-token"})
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == str(int(editor_pages.LOGIN_WINDOW_S))
        assert "Too many wrong tokens" in throttled.text
        assert_public_headers(throttled)


async def test_wrong_bearer_tokens_at_the_admin_api_are_throttled_per_client(
    settings: Settings, tmp_path: Path
) -> None:
    """Past its budget of wrong tokens a client's bearer requests answer 429, the right token
    too (or the answer would tell a guesser which guess hit); other clients are not held."""
    strict = settings.model_copy(update={"admin_api_failures_allowed": 3})
    async with running_renderer(strict, tmp_path) as renderer:
        guesser = httpx.AsyncClient(
            base_url=renderer.base_url,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
            timeout=15.0,
        )
        async with guesser, renderer.client() as editor:
            for _ in range(5):  # no credential at all is not a guess
                assert (await guesser.get("/admin/api/issues")).status_code == 401
            for guess in ("Bearer guess-1", "Bearer test-admin-tokeN", "Basic dGVzdA=="):
                wrong = await guesser.get("/admin/api/issues", headers={"Authorization": guess})
                assert wrong.status_code == 401, guess
            held = await guesser.get("/admin/api/issues", headers=ADMIN)
            assert held.status_code == 429, "the right token waits out the window too"
            assert int(held.headers["retry-after"]) > 0
            assert (await editor.get("/admin/api/issues", headers=ADMIN)).status_code == 200
