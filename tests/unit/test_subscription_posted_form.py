"""The signup post's own urlencoded parsing reads every form exactly as Starlette's does."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from services.subscription.routes.signup import _posted_form

BODIES = [
    b"email=reader%40example.org&languages=en&languages=ru&lang=be",
    b"email=%D1%87%D0%B8%D1%82%D0%B0%D1%87%40%D0%BF%D1%80%D0%B8%D0%BC%D0%B5%D1%80.%D0%B1%D0%B5%D0%BB",
    b"website=&csrf_token=abc+def&form_stamp=c2lnbnVw.Z1.x%2By",
    b"email=raw\xd1\x87bytes&empty&=novalue&a=1=2",
    b"",
]


def _request(body: bytes, content_type: str) -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/subscribe",
        "headers": [(b"content-type", content_type.encode())],
        "query_string": b"",
    }
    return Request(scope, receive)


@pytest.mark.parametrize("body", BODIES)
async def test_urlencoded_posts_read_as_starlette_reads_them(body: bytes) -> None:
    kind = "application/x-www-form-urlencoded"
    ours = await _posted_form(_request(body, f"{kind}; charset=UTF-8"))
    theirs = await _request(body, kind).form()
    assert list(ours.multi_items()) == list(theirs.multi_items()), body


async def test_too_many_fields_are_refused() -> None:
    body = b"&".join(b"f%d=x" % n for n in range(1001))
    with pytest.raises(HTTPException, match="too many form fields"):
        await _posted_form(_request(body, "application/x-www-form-urlencoded"))


async def test_other_encodings_go_to_starlette() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nr@example.org\r\n--b--\r\n'
    form = await _posted_form(_request(body, "multipart/form-data; boundary=b"))
    assert form.get("email") == "r@example.org"
