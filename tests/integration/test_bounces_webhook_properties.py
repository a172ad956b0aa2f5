"""Property: no body a webhook can receive makes the receiver answer 5xx.

Hypothesis generates JSON (arbitrary values, and provider-shaped events with hostile field
values: huge integers, nested containers, odd strings) and raw bytes, and posts them over HTTP
to the running receiver: SendGrid bodies signed with the test key and Postmark bodies with its
credentials (so they reach the parsers), SES bodies both raw and as signed SNS notifications.
Bounded: a fixed number of examples per endpoint, no shrinking deadline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.bounces_support import (
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    Receiver,
    start_receiver,
)

pytestmark = pytest.mark.integration

EXAMPLES = 60

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["5.1.1", "550 5.1.1 no such user", "<d1.abc@example.org>", "1-" + "a" * 16]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
emails = st.one_of(st.emails(), st.text(max_size=30))


def event_of(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()})


sendgrid_events = st.lists(
    event_of(
        {
            "event": st.sampled_from(
                ["bounce", "dropped", "deferred", "spamreport", "unsubscribe", "group_unsubscribe"]
            ),
            "email": emails,
            "delivery_id": st.integers(min_value=-5, max_value=2**66) | st.text(max_size=25),
            "sg_event_id": st.text(max_size=20),
            "smtp-id": st.text(max_size=60),
            "type": st.sampled_from(["bounce", "blocked"]),
            "status": st.text(max_size=10),
            "reason": st.text(max_size=80),
        }
    ),
    max_size=5,
)
postmark_bodies = event_of(
    {
        "RecordType": st.sampled_from(["Bounce", "SpamComplaint", "Delivery"]),
        "Type": st.sampled_from(["HardBounce", "SoftBounce", "SpamComplaint", "Unsubscribe"]),
        "Email": emails,
        "ID": st.integers() | st.text(max_size=10),
        "Metadata": st.dictionaries(st.just("delivery_id"), st.integers() | st.text(max_size=22)),
        "Details": st.text(max_size=80),
        "Content": st.text(max_size=300),
    }
)
ses_messages = event_of(
    {
        "notificationType": st.sampled_from(["Bounce", "Complaint", "Delivery", "Other"]),
        "mail": event_of({"source": emails, "headers": json_values, "commonHeaders": json_values}),
        "bounce": event_of(
            {
                "bounceType": st.sampled_from(["Permanent", "Transient"]),
                "bounceSubType": st.text(max_size=12),
                "bouncedRecipients": st.lists(event_of({"emailAddress": emails}), max_size=3),
            }
        ),
        "complaint": event_of(
            {"complainedRecipients": st.lists(event_of({"emailAddress": emails}), max_size=3)}
        ),
    }
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


def run_properties(r: Receiver) -> list[int]:
    seen: list[int] = []
    common = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    with httpx.Client(base_url=r.http, timeout=10) as http:

        def check(answer: httpx.Response) -> None:
            seen.append(answer.status_code)
            assert answer.status_code < 500, (answer.status_code, answer.text[:200])

        @common
        @given(st.one_of(sendgrid_events.map(lambda e: json.dumps(e).encode()), bodies))
        def sendgrid(body: bytes) -> None:
            check(http.post("/webhooks/sendgrid", content=body, headers=r.sendgrid_headers(body)))

        @common
        @given(st.one_of(postmark_bodies.map(lambda e: json.dumps(e).encode()), bodies))
        def postmark(body: bytes) -> None:
            check(
                http.post(
                    "/webhooks/postmark", content=body, auth=(POSTMARK_USER, POSTMARK_PASSWORD)
                )
            )

        @common
        @given(ses_messages, bodies)
        def ses(message: dict[str, Any], raw: bytes) -> None:
            check(http.post("/webhooks/ses", json=r.sns_envelope(message)))
            check(http.post("/webhooks/ses", content=raw))

        sendgrid()
        postmark()
        ses()
    return seen


async def test_no_webhook_body_makes_the_receiver_answer_5xx(
    amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with start_receiver(
        amqp_url=amqp_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        bounces_rate_per_ip=0,  # no limit: every example reaches the parsers
        bounces_rate_per_provider=0,
    ) as r:
        seen = await asyncio.to_thread(run_properties, r)
    assert len(seen) >= 4 * EXAMPLES
    assert {200, 400} <= set(seen), f"both accepted and refused bodies were tried: {set(seen)}"
