"""The admin API (bearer token): search, segment counts, CSV import, export, GDPR erasure."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from sqlmodel import select

from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables import ConsentRecord, Subscriber, Suppression
from shared.messaging.schemas import SubscriberErased, decode
from shared.messaging.topology import DISPATCHER_ERASURES, connect
from tests.integration.subscription_support import (
    ADMIN_TOKEN,
    command_tap,
    private_amqp_url,
    running_app,
    settings_for,
    sign_up,
)

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _csv(rows: list[str]) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("people.csv", ("\n".join(rows) + "\n").encode(), "text/csv")}


async def test_every_admin_call_needs_the_bearer_token(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with running_app(settings) as (_, client):
        for method, path in (
            ("GET", "/api/subscribers"),
            ("GET", "/api/segments"),
            ("GET", "/api/subscribers/export"),
            ("GET", "/api/subscribers/1"),
            ("DELETE", "/api/subscribers/1"),
            ("POST", "/api/erasures"),
            ("POST", "/api/subscribers/import?source=x"),
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
                answer = await client.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
        schema = (await client.get("/openapi.json")).json()
        for path in (
            "/api/subscribers",
            "/api/segments",
            "/api/subscribers/import",
            "/api/subscribers/export",
            "/api/subscribers/{subscriber_id}",
            "/api/erasures",
        ):
            assert path in schema["paths"], path
        assert "Bearer" in json.dumps(schema)


async def test_import_search_count_export_and_erase(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    domain = f"import-{uuid.uuid4().hex[:8]}.example.org"
    known, suppressed = f"known@{domain}", f"bounced@{domain}"
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            session.add(Suppression(email_hash=address_hash(suppressed), reason="hard_bounce"))
            await session.commit()
        async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
            await sign_up(client, known)
            await tap.wait_for(known, "confirmation")
            answer = await client.post(
                "/api/subscribers/import",
                params={"source": "conference 2026 list"},
                headers=AUTH,
                files=_csv(
                    [
                        "Email,Languages,Locale",
                        f"Anna@{domain},be ru,be",
                        f"boris@{domain},ru,ru",
                        f"{known},en,en",
                        f"{suppressed},en,en",
                        "not-an-address,en,en",
                        f"carl@{domain},xx,en",
                        f"anna@{domain},be,be",
                    ]
                ),
            )
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert report["created"] == 2
            assert report["skipped_existing"] == 2  # the form's signup and a repeated row
            assert report["skipped_suppressed"] == 1
            assert [p["line"] for p in report["invalid"]] == [6, 7]
            assert report["status_given"] == "pending"
            await tap.settle()
            assert tap.for_address(f"anna@{domain}") == [], "imports without consent get no mail"

            prior = await client.post(
                "/api/subscribers/import",
                params={"source": "old CRM", "prior_consent": "true", "consent_text_version": "v0"},
                headers=AUTH,
                files=_csv(["email,languages", f"dora@{domain},en;be"]),
            )
            assert prior.json()["created"] == 1
            assert prior.json()["status_given"] == "active"

            listed = (
                await client.get("/api/subscribers", params={"q": domain}, headers=AUTH)
            ).json()
            assert listed["total"] == 4
            assert {i["email"] for i in listed["items"]} == {
                f"anna@{domain}",
                f"boris@{domain}",
                known,
                f"dora@{domain}",
            }
            anna = next(i for i in listed["items"] if i["email"] == f"anna@{domain}")
            assert anna["languages"] == ["be", "ru"]
            assert anna["status"] == "pending"
            active_be = (
                await client.get(
                    "/api/subscribers",
                    params={"q": domain, "status": "active", "language": "be"},
                    headers=AUTH,
                )
            ).json()
            assert [i["email"] for i in active_be["items"]] == [f"dora@{domain}"]
            assert (
                await client.get("/api/subscribers?status=bogus", headers=AUTH)
            ).status_code == 422

            segments = {
                s["language"]: s
                for s in (await client.get("/api/segments", headers=AUTH)).json()["segments"]
            }
            assert segments["be"]["active"] >= 1
            assert segments["ru"]["pending"] >= 2

            exported = await client.get(
                "/api/subscribers/export", params={"format": "csv"}, headers=AUTH
            )
            assert exported.headers["content-type"].startswith("text/csv")
            rows = [
                r for r in csv.DictReader(io.StringIO(exported.text)) if r["email"].endswith(domain)
            ]
            assert {r["email"] for r in rows} == {
                f"anna@{domain}",
                f"boris@{domain}",
                known,
                f"dora@{domain}",
            }
            as_json = (
                await client.get(
                    "/api/subscribers/export",
                    params={"format": "json", "status": "active"},
                    headers=AUTH,
                )
            ).json()
            assert [r["email"] for r in as_json if r["email"].endswith(domain)] == [
                f"dora@{domain}"
            ]

            # GDPR erasure: personal data goes, a hashed suppression stays.
            erased = await client.delete(f"/api/subscribers/{anna['id']}", headers=AUTH)
            assert erased.status_code == 200
            assert (
                await client.get(f"/api/subscribers/{anna['id']}", headers=AUTH)
            ).status_code == 404
            assert (
                await client.delete(f"/api/subscribers/{anna['id']}", headers=AUTH)
            ).status_code == 404
            by_address = await client.post(
                "/api/erasures", json={"email": f"never-subscribed@{domain}"}, headers=AUTH
            )
            assert by_address.json() == {"erased_subscriber_id": None, "suppressed": True}
            # The dispatcher is told once, by id, to forget the address in its deliveries.
            assert await _erasure_events(private_amqp_url) == [anna["id"]]

            again = await client.post(
                "/api/subscribers/import",
                params={"source": "re-import", "prior_consent": "true"},
                headers=AUTH,
                files=_csv(["email", f"anna@{domain}", f"never-subscribed@{domain}"]),
            )
            assert again.json()["skipped_suppressed"] == 2
            await sign_up(client, f"anna@{domain}")
            await tap.settle()
            assert tap.for_address(f"anna@{domain}") == []

            bad = await client.post(
                "/api/subscribers/import",
                params={"source": "x"},
                headers=AUTH,
                files=_csv(["name,phone", "a,b"]),
            )
            assert bad.status_code == 400
        async with sessions() as session:
            row = await session.get(Subscriber, anna["id"])
            assert row is not None
            assert row.email is None
            assert row.status == "erased"
            assert row.email_hash == ""
            assert await session.get(Suppression, address_hash(f"anna@{domain}")) is not None
            consents = (
                await session.exec(
                    select(ConsentRecord).where(
                        ConsentRecord.email_hash == address_hash(f"anna@{domain}")
                    )
                )
            ).all()
            assert consents
            assert all(c.withdrawal_method == "erasure" for c in consents)
            assert all(c.source == "" for c in consents)
            dora = (
                await session.exec(
                    select(ConsentRecord).where(
                        ConsentRecord.email_hash == address_hash(f"dora@{domain}")
                    )
                )
            ).one()
            assert dora.form == "import"
            assert dora.source == "old CRM"
            assert dora.consent_text_version == "v0"
            assert dora.confirmed_at is not None
    finally:
        await engine.dispose()


async def test_openapi_documents_the_bearer_scheme_on_admin_calls(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with running_app(settings) as (_, client):
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    for path in ("/api/subscribers", "/api/segments", "/api/subscribers/import"):
        operation = next(iter(schema["paths"][path].values()))
        assert {"AdminToken": []} in operation["security"], path


async def _erasure_events(amqp_url: str) -> list[int]:
    """The subscriber ids of the SubscriberErased events waiting for the dispatcher."""
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(DISPATCHER_ERASURES.name)
        ids: list[int] = []
        while (message := await queue.get(fail=False)) is not None:
            ids.append(decode(SubscriberErased, message.body).subscriber_id)
            await message.ack()
        return ids
    finally:
        await connection.close()
