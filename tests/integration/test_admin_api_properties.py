"""A property-based run over the subscription admin API, from the app's own OpenAPI schema:
no request, however malformed, gets a 5xx. Real HTTP (uvicorn on loopback), real database on
both engines, real RabbitMQ.

Two phases per engine: every call that differs from a valid one in exactly one input (about
400, deterministic), then ``EXAMPLES_PER_ENGINE`` Hypothesis-generated calls, shared out among
the admin operations by how many inputs each takes. 30-50 s for both engines here (loaded
machine, most of it PostgreSQL set-up and the server start).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.openapi_strategies import Call, calls, single_faults
from tests.integration.subscription_http import subscription_in_thread
from tests.integration.subscription_support import ADMIN_TOKEN, private_amqp_url, settings_for

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES_PER_ENGINE = 150  # shared out by the number of inputs each operation takes


def _is_admin(operation: dict[str, Any]) -> bool:
    return {"AdminToken": []} in operation.get("security", [])


def _send(client: httpx.Client, call: Call) -> httpx.Response:
    return client.request(
        call.method,
        call.path,
        params=call.params,
        content=call.content,
        files=call.files,
        headers=call.headers,
    )


def _status(client: httpx.Client, call: Call) -> int:
    """The status, or 599 when the server dropped the connection instead of answering."""
    try:
        return _send(client, call).status_code
    except httpx.TransportError:
        return 599


def _seed(client: httpx.Client) -> dict[str, list[Any]]:
    """A dozen subscribers, two of them erased (which leaves suppressions to lift); their
    addresses and ids become hints, so that generated calls also reach existing rows."""
    rows = "\n".join(["email,languages"] + [f"p{i}@example.org,en" for i in range(12)])
    seeded = client.post(
        "/api/subscribers/import",
        params={"source": "property run", "prior_consent": "true"},
        headers=AUTH,
        files={"file": ("seed.csv", rows.encode(), "text/csv")},
    )
    assert seeded.status_code == 200, seeded.text
    listed = client.get("/api/subscribers", headers=AUTH).json()["items"]
    for address in ("p0@example.org", "p1@example.org"):
        erased = client.post("/api/erasures", json={"email": address}, headers=AUTH)
        assert erased.status_code == 200, erased.text
    return {
        "email": [s["email"] for s in listed],
        "subscriber_id": [s["id"] for s in listed],
    }


def _inputs(schema: dict[str, Any], operation: tuple[str, str]) -> int:
    spec = schema["paths"][operation[0]][operation[1]]
    return 1 + len(spec.get("parameters", [])) + ("requestBody" in spec)


def _share(schema: dict[str, Any], wanted: tuple[str, str], every: list[tuple[str, str]]) -> int:
    total = sum(_inputs(schema, operation) for operation in every)
    return max(10, EXAMPLES_PER_ENGINE * _inputs(schema, wanted) // total)


def _no_server_error(
    client: httpx.Client, strategy: st.SearchStrategy[Call], examples: int
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        # No shrinking: an unexpected exception is logged with a rich traceback (structlog's
        # default console renderer in tests) and a 500 can take seconds; the first failing
        # call is reported as drawn.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(call=strategy)
    def no_server_error(call: Call) -> None:
        answer = _send(client, call)
        assert answer.status_code < 500, f"{call} -> {answer.status_code} {answer.text[:300]}"

    no_server_error()


def test_admin_api_answers_no_5xx_to_generated_requests(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    # No budget of wrong tokens here: one generated call in twenty carries a wrong one, and
    # past a budget the right token is held too (test_ops_login.py tests the budget).
    app_settings = settings_for(private_amqp_url, database_url, tmp_path).model_copy(
        update={"admin_api_failures_allowed": 0}
    )
    with (
        subscription_in_thread(app_settings) as base,
        httpx.Client(base_url=base, timeout=60.0) as client,
    ):
        hints = _seed(client)
        schema = client.get("/openapi.json").json()
        operations = [
            (path, method)
            for path, item in schema["paths"].items()
            for method, operation in item.items()
            if _is_admin(operation)
        ]
        assert len(operations) >= 10, operations
        # First every single-input fault, deterministically; then random calls.
        serial = itertools.count()

        def upload() -> bytes:
            return f"email\nfault.{next(serial)}@example.org\n".encode()

        faults = single_faults(
            schema,
            select=lambda _p, _m, operation: _is_admin(operation),
            auth=AUTH,
            hints=hints,
            upload=upload,
        )
        failed = [(call, status) for call in faults if (status := _status(client, call)) >= 500]
        assert not failed, f"{len(failed)} of {len(faults)} calls answered 5xx: {failed[:5]}"
        # One run per operation, so that every operation gets its share of the examples.
        for wanted in operations:

            def only(path: str, method: str, _: object, wanted: tuple[str, str] = wanted) -> bool:
                return (path, method) == wanted

            examples = _share(schema, wanted, operations)
            _no_server_error(client, calls(schema, select=only, auth=AUTH, hints=hints), examples)
