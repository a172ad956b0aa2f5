"""The renderer's admin API (``/admin/api/issues...``) never answers 5xx: malformed JSON,
wrong types, lone surrogates and JSON nested past the parser's limit answer 422. Real HTTP
against the renderer service, real database and a private RabbitMQ vhost. A fixed table of
faults (each used to answer 500), then a bounded Hypothesis run from a worker thread while
the event loop serves the renderer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.settings import Settings, load_settings
from tests.integration.openapi_strategies import BODY_FAULTS, any_json, texts
from tests.integration.renderer_harness import running_renderer, sample_sources
from tests.integration.subscription_support import private_amqp_url

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
TOKEN = "renderer-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
EXAMPLES = 150
SENDS = "/admin/api/issues/sample-issue/sends"


def _settings(amqp_url: str, database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        secret_key="renderer-admin-test-" + "s" * 32,
        admin_token=TOKEN,
    )


FAULTS: list[tuple[str, str, bytes]] = [
    *(("PUT", "/admin/api/issues/fault-issue", body) for body in BODY_FAULTS),
    *(("POST", SENDS, body) for body in BODY_FAULTS),
    ("PUT", "/admin/api/issues/fault-issue", b'{"sources": {"en": "\\ud800"}}'),
    ("PUT", "/admin/api/issues/fault-issue", b'{"sources": {"en": 5}}'),
    ("PUT", "/admin/api/issues/fault-issue", b'{"sources": ["en"]}'),
    ("POST", SENDS, b'{"segments": [5]}'),
    ("POST", SENDS, b'{"segments": [null]}'),
    ("POST", SENDS, b'{"segments": ["\\udc00"]}'),
    ("POST", SENDS, b'{"segments": 5}'),
    ("POST", SENDS, b'{"fallbacks": [1, 2]}'),
    ("POST", SENDS, b'{"fallbacks": {"be": 5}}'),
    ("POST", SENDS, b'{"test_to": "\\ud800@example.org"}'),
    ("POST", SENDS, b'{"test_to": ["editor@example.org"]}'),
]


async def test_renderer_admin_api_refuses_malformed_requests_with_4xx(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with (
        running_renderer(_settings(private_amqp_url, sqlite_url, tmp_path), tmp_path) as renderer,
        httpx.AsyncClient(base_url=renderer.base_url, timeout=60.0) as client,
    ):
        answers = [
            (
                method,
                path,
                body[:40],
                (await client.request(method, path, content=body, headers=ADMIN)).status_code,
            )
            for method, path, body in FAULTS
        ]
        good = await client.put(
            "/admin/api/issues/fault-issue",
            headers=ADMIN,
            content=json.dumps({"sources": sample_sources("en")}).encode(),
        )
    assert [a for a in answers if a[3] != 422] == [], answers
    assert good.status_code == 200, good.text


def _requests() -> st.SearchStrategy[tuple[str, str, bytes]]:
    names = st.sampled_from(["sample-issue", "prop-issue"]) | texts(max_size=30)
    languages = st.sampled_from(["en", "be", "ru", "xx"]) | texts(max_size=5)
    sources = st.dictionaries(languages, texts(max_size=200) | st.sampled_from([""]), max_size=3)
    send = st.fixed_dictionaries(
        {},
        optional={
            "segments": st.lists(languages, max_size=4) | languages | any_json(),
            "fallbacks": st.dictionaries(languages, languages, max_size=3) | any_json(),
            "test_to": st.emails() | texts(max_size=30) | any_json(),
            "confirm": st.booleans() | any_json(),
        },
    )
    bodies = st.one_of(
        st.fixed_dictionaries({"sources": sources}).map(json.dumps),
        send.map(json.dumps),
        any_json().map(json.dumps),
    ).map(str.encode) | st.binary(max_size=64)
    paths = st.one_of(
        st.just("/admin/api/issues"),
        names.map(lambda n: f"/admin/api/issues/{_quote(n)}"),
        names.map(lambda n: f"/admin/api/issues/{_quote(n)}/sends"),
    )
    return st.tuples(st.sampled_from(["GET", "PUT", "POST"]), paths, bodies)


def _quote(name: str) -> str:
    return quote(name.encode("utf-8", "surrogatepass").hex() if _surrogate(name) else name, safe="")


def _surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _property_run(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60.0) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=_requests())
        def no_server_error(request: tuple[str, str, bytes]) -> None:
            method, path, body = request
            answer = client.request(method, path, content=body, headers=ADMIN)
            assert answer.status_code < 500, (method, path, body[:200], answer.status_code)

        no_server_error()


async def test_renderer_admin_api_answers_no_5xx_to_generated_requests(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings_ = _settings(private_amqp_url, sqlite_url, tmp_path)
    async with running_renderer(settings_, tmp_path) as renderer:
        await asyncio.to_thread(_property_run, renderer.base_url)
