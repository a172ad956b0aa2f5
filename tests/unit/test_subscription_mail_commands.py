"""The RenderTransactional commands the service asks for, with a fake publisher."""

from __future__ import annotations

import pytest

from services.subscription.errors import MailQueueUnavailable
from services.subscription.mail_commands import TransactionalMail
from shared.links import Links
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import Message, RenderTransactional
from shared.messaging.topology import RENDER_TRANSACTIONAL
from shared.tokens import TokenSigner


class FakePublisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.published: list[tuple[Message, str]] = []
        self.fail = fail

    async def publish(self, message: Message, *, routing_key: str) -> None:
        if self.fail:
            raise PublishError("no route")
        self.published.append((message, routing_key))


def _mail(publisher: FakePublisher) -> TransactionalMail:
    links = Links(public_url="https://news.example.org", signer=TokenSigner("s" * 40))
    return TransactionalMail(
        links=links, publisher=publisher, public_url="https://news.example.org/"
    )


async def test_a_confirmation_carries_the_four_agreed_links() -> None:
    publisher = FakePublisher()
    await _mail(publisher).request(
        "confirmation", subscriber_id=5, email="a@example.org", email_hash="f" * 64, language="be"
    )
    [(message, key)] = publisher.published
    assert key == RENDER_TRANSACTIONAL
    assert isinstance(message, RenderTransactional)
    assert message.kind == "confirmation"
    assert message.language == "be"
    assert message.to == "a@example.org"
    assert set(message.links) == {
        "confirm_url",
        "unsubscribe_url",
        "preferences_url",
        "one_click_url",
    }
    assert message.links["confirm_url"].startswith("https://news.example.org/confirm?token=")
    assert message.links["one_click_url"].startswith(
        "https://news.example.org/unsubscribe/one-click?token="
    )


async def test_welcome_has_no_confirm_link_and_goodbye_only_a_signup_link() -> None:
    publisher = FakePublisher()
    mail = _mail(publisher)
    await mail.request(
        "welcome", subscriber_id=5, email="a@example.org", email_hash="f" * 64, language="en"
    )
    await mail.request(
        "goodbye", subscriber_id=5, email="a@example.org", email_hash="f" * 64, language="ru"
    )
    welcome, goodbye = (m for m, _ in publisher.published)
    assert isinstance(welcome, RenderTransactional)
    assert isinstance(goodbye, RenderTransactional)
    assert "confirm_url" not in welcome.links
    assert "one_click_url" in welcome.links
    assert goodbye.links == {"signup_url": "https://news.example.org/?lang=ru"}


async def test_a_refused_publish_is_reported_as_mail_queue_unavailable() -> None:
    with pytest.raises(MailQueueUnavailable):
        await _mail(FakePublisher(fail=True)).request(
            "confirmation",
            subscriber_id=5,
            email="a@example.org",
            email_hash="f" * 64,
            language="en",
        )
