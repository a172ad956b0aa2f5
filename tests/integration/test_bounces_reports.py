"""Reports that changed nobody are there for operators: admin API, ops page, no addresses.

The real receiver keeps an ARF report sent to ``abuse@`` (it names a reader, proves nothing);
the real subscription app (``create_app`` with its lifespan) on the same database lists it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from services.subscription.app import create_app
from shared.addresses import address_hash
from shared.settings import load_settings
from tests.integration.bounces_support import (
    DOMAIN,
    add_subscriber,
    send_with_null_sender,
    start_receiver,
    status_of,
)

pytestmark = pytest.mark.integration

TOKEN = "reports-admin-token"


def arf(recipient: str) -> bytes:
    return (
        f"From: abuse-desk@isp.example.net\r\nTo: abuse@{DOMAIN}\r\nSubject: Abuse report\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@isp.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
        "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n\r\n--arf--\r\n"
    ).encode()


async def test_unmatched_reports_are_listed_for_ops_without_addresses(
    amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with start_receiver(amqp_url=amqp_url, database_url=sqlite_url, var_dir=tmp_path) as r:
        victim = await add_subscriber(r.sessions, "victim")
        assert victim.email is not None
        reply = await send_with_null_sender(
            arf(victim.email), recipient=f"abuse@{DOMAIN}", port=r.smtp_port
        )
        assert reply.code == 250
        assert await status_of(r, victim) == "active"
    settings = load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        secret_key="reports-secret-" + "k" * 32,
        admin_token=TOKEN,
    )
    app = create_app(settings)
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/api/bounces/reports")).status_code == 401
            listed = await http.get("/api/bounces/reports?status=unmatched", headers=auth)
            counts = (await http.get("/api/bounces/reports/counts", headers=auth)).json()
            summary = (await http.get("/admin/summary.json", headers=auth)).json()
            sections = (await http.get("/admin/sections", headers=auth)).text
            out_of_range = [
                (await http.get(path, headers=auth)).status_code
                for path in (
                    "/api/bounces/reports?offset=9223372036854775808",
                    "/api/bounces/reports?limit=0",
                    "/api/subscribers/2147483648/bounces",
                )
            ]
    assert listed.status_code == 200, listed.text
    [report] = listed.json()
    assert (report["status"], report["mailbox"], report["bounce_class"]) == (
        "unmatched",
        "abuse",
        "complaint",
    )
    assert report["recipient_domain"] == "example.com"
    assert report["recipient_hash"] == address_hash(victim.email)
    assert report["reporter_domain"] == "isp.example.net"
    assert "no VERP token" in report["reason"]
    assert victim.email not in listed.text, "no full address in the admin API"
    assert (counts["unmatched"], counts["unreadable"]) == (1, 0)
    assert summary["kept_reports"]["unmatched"] == 1
    assert 'data-kept="unmatched">1<' in sections
    assert victim.email not in sections
    assert out_of_range == [422, 422, 422]
