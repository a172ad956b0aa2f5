"""Write deploy/rabbitmq/definitions.json from shared/messaging/topology.py.

Run from the repository root after changing the topology:

    .venv/bin/python deploy/rabbitmq/generate_definitions.py

The test suite fails while the committed file differs from what this prints, so the broker's
definitions and the code's declares never drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.messaging import topology

VHOST = "newsletter"
TARGET = Path(__file__).with_name("definitions.json")
RABBITMQ_VERSION = "3.13.7"
DEAD_LETTERS_MAX_BYTES = 2 * 1024**3


def _exchange(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "vhost": VHOST, "type": kind, "durable": True,
            "auto_delete": False, "internal": False, "arguments": {}}  # fmt: skip


def _queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "vhost": VHOST, "durable": True, "auto_delete": False,
            "arguments": arguments}  # fmt: skip


def _binding(source: str, queue: str, key: str) -> dict[str, Any]:
    return {"source": source, "vhost": VHOST, "destination": queue,
            "destination_type": "queue", "routing_key": key, "arguments": {}}  # fmt: skip


def _policy(name: str, pattern: str, definition: dict[str, Any]) -> dict[str, Any]:
    return {"vhost": VHOST, "name": name, "pattern": pattern, "apply-to": "queues",
            "priority": 10, "definition": definition}  # fmt: skip


def definitions() -> dict[str, Any]:
    exchanges = [
        _exchange(topology.COMMANDS, "direct"),
        _exchange(topology.EVENTS, "topic"),
        _exchange(topology.DEAD, "topic"),
        *(_exchange(tier.exchange, "fanout") for tier in topology.RETRY_TIERS),
    ]
    queues = [_queue(spec.name, spec.declare_arguments()) for spec in topology.WORK_QUEUES]
    bindings = [
        _binding(spec.exchange, spec.name, key)
        for spec in topology.WORK_QUEUES
        for key in spec.routing_keys
    ]
    for tier in topology.RETRY_TIERS:
        queues.append(
            _queue(
                tier.queue,
                {"x-message-ttl": tier.delay_ms, "x-dead-letter-exchange": topology.COMMANDS},
            )
        )
        bindings.append(_binding(tier.exchange, tier.queue, ""))
    queues.append(_queue(topology.DEAD_LETTER_QUEUE, {"x-queue-type": "quorum"}))
    bindings.append(_binding(topology.DEAD, topology.DEAD_LETTER_QUEUE, "#"))
    work = "|".join(spec.name.replace(".", r"\.") for spec in topology.WORK_QUEUES)
    policies = [
        # Safety net and the knob to turn at run time: the queues' own x-arguments win.
        _policy(
            "newsletter-work-queues",
            f"^({work})$",
            {"dead-letter-exchange": topology.DEAD, "delivery-limit": topology.DELIVERY_LIMIT},
        ),
        _policy(
            "newsletter-retry-tiers",
            r"^dispatcher\.retry\.",
            {"dead-letter-exchange": topology.COMMANDS},
        ),
        # No delivery limit here: peeking at dead letters returns them to the queue.
        _policy(
            "newsletter-dead-letters",
            "^" + topology.DEAD_LETTER_QUEUE.replace(".", r"\.") + "$",
            {"max-length-bytes": DEAD_LETTERS_MAX_BYTES},
        ),
    ]
    return {
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "RabbitMQ",
        "product_version": RABBITMQ_VERSION,
        "vhosts": [
            {"name": VHOST, "tags": [], "metadata": {"description": "newsletter suite", "tags": []}}
        ],
        "permissions": [
            {"user": "newsletter", "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
        "parameters": [],
        "global_parameters": [],
        "topic_permissions": [],
    }


def render() -> str:
    return json.dumps(definitions(), indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET}\n")
