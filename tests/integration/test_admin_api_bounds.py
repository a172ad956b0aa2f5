"""Out-of-range ids, offsets and limits on the subscription admin API answer 404 or 422, never
500, on SQLite and PostgreSQL, over real HTTP; the CSV export neutralises formula cells."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import httpx
import pytest

from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables import Subscriber, SubscriberStatus
from tests.integration.subscription_http import served_subscription
from tests.integration.subscription_support import ADMIN_TOKEN, private_amqp_url, settings_for

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Beyond PostgreSQL's INTEGER (the id column), beyond a signed 64-bit integer (SQLite's and
# PostgreSQL's BIGINT), negative, zero, and far beyond anything a driver can bind.
OUT_OF_RANGE_IDS = ["2147483648", "9223372036854775808", "-1", "0", "1" + "0" * 30]


def _id_calls(raw: str) -> list[tuple[str, str, dict[str, str] | None]]:
    return [
        ("GET", f"/api/subscribers/{raw}", None),
        ("DELETE", f"/api/subscribers/{raw}", None),
        ("GET", f"/api/subscribers/{raw}/bounces", None),
        ("POST", f"/api/subscribers/{raw}/suppression/lift", {"note": "x"}),
    ]


async def test_out_of_range_ids_offsets_and_limits_answer_404_or_422(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    async with (
        served_subscription(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10.0) as client,
    ):
        for raw in OUT_OF_RANGE_IDS:
            for method, path, body in _id_calls(raw):
                answer = await client.request(method, path, json=body)
                assert answer.status_code in (404, 422), (method, path, answer.text)
        for params in (
            {"offset": "9223372036854775808"},
            {"offset": "2147483648"},
            {"offset": "-1"},
            {"limit": "1000000000000"},
            {"limit": "0"},
            {"limit": "-5"},
        ):
            answer = await client.get("/api/subscribers", params=params)
            assert answer.status_code == 422, (params, answer.text)
        for params in ({"limit": "9223372036854775808"}, {"hours": "9223372036854775808"}):
            answer = await client.get(
                "/api/subscribers/1/bounces" if "limit" in params else "/api/bounces/domains",
                params=params,
            )
            assert answer.status_code == 422, (params, answer.text)
        # The edges that are in range still work.
        last = await client.get("/api/subscribers", params={"offset": str(2**31 - 1)})
        assert last.status_code == 200, last.text
        assert last.json()["items"] == []
        assert (await client.get(f"/api/subscribers/{2**31 - 1}")).status_code == 404


async def test_text_holding_nul_answers_422_on_both_engines(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL cannot store or compare U+0000 in text; it used to surface as a 500."""
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    tag = uuid.uuid4().hex[:10]
    people = {"file": ("p.csv", f"email\nnul.{tag}@example.org\n".encode(), "text/csv")}
    async with (
        served_subscription(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30.0) as client,
    ):
        search = await client.get("/api/subscribers", params={"q": "a\x00"})
        assert search.status_code == 422, search.text
        for params in ({"source": "a\x00b"}, {"source": "ok", "consent_text_version": "v\x00"}):
            imported = await client.post("/api/subscribers/import", params=params, files=people)
            assert imported.status_code == 422, (params, imported.text)
        erased = await client.post("/api/erasures", json={"email": f"nul.{tag}@example.org"})
        assert erased.status_code == 200, erased.text
        lift = {"email": f"nul.{tag}@example.org", "note": "x\x00"}
        lifted = await client.post("/api/suppressions/lift", json=lift)
        assert lifted.status_code == 422, lifted.text
        lift["note"] = "typo in the address"
        assert (await client.post("/api/suppressions/lift", json=lift)).status_code == 200


FORMULAS = {
    "=cmd|'/c calc'!A0@example.org": "'=cmd|'/c calc'!A0@example.org",
    "+{tag}@example.org": "'+{tag}@example.org",
    "-{tag}@example.org": "'-{tag}@example.org",
    "@{tag}@example.org": "'@{tag}@example.org",
    "\t{tag}@example.org": "'\t{tag}@example.org",
    "\r{tag}@example.org": "'\r{tag}@example.org",
}


async def test_csv_export_neutralises_cells_that_start_a_formula(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    stored = {k.format(tag=tag): v.format(tag=tag) for k, v in FORMULAS.items()}
    stored[f"=cmd|'/c calc'!A0.{tag}@example.org"] = f"'=cmd|'/c calc'!A0.{tag}@example.org"
    del stored["=cmd|'/c calc'!A0@example.org"]
    plain = f"plain.{tag}@example.org"
    engine = create_engine(database_url)
    try:
        # Rows written straight into the table: the export must be safe whatever let an
        # address in (an older validator, a migration, another tool).
        async with session_factory(engine)() as session:
            for email in [*stored, plain]:
                session.add(
                    Subscriber(
                        email=email,
                        email_hash=address_hash(email),
                        status=SubscriberStatus.ACTIVE,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    async with (
        served_subscription(settings) as base,
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10.0) as client,
    ):
        imported = await client.post(
            "/api/subscribers/import",
            params={"source": "formula test"},
            files={"file": ("p.csv", f"email\n=1+2.{tag}@example.org\n".encode(), "text/csv")},
        )
        assert imported.json()["created"] == 1, imported.text
        stored[f"=1+2.{tag}@example.org"] = f"'=1+2.{tag}@example.org"
        exported = await client.get("/api/subscribers/export", params={"format": "csv"})
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    emails = [r["email"] for r in rows if tag in r["email"]]
    assert sorted(emails) == sorted([*stored.values(), plain])
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
