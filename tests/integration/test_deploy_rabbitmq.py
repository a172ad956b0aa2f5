"""deploy/rabbitmq: the definitions match shared/messaging/topology.py and work on a broker.

The definitions are imported into a throwaway vhost of the local RabbitMQ (a copy rewritten
to that vhost, with ``rabbitmqctl import_definitions``); then the code's own
``declare_topology`` runs against it, which fails with PRECONDITION_FAILED if a queue's
arguments differ, and a message rejected more often than the delivery limit must end in the
dead-letter queue. The one-shot import script is run against a local HTTP server.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import pytest

from shared.messaging import topology
from tests.support import infra

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
IMPORT_SCRIPT = ROOT / "deploy" / "rabbitmq" / "import_definitions.py"
GENERATOR = ROOT / "deploy" / "rabbitmq" / "generate_definitions.py"


def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def rabbitmqctl(*args: str, stdin: str | None = None) -> str:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run(
        [binary, "-q", *args], input=stdin, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def _load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_definitions_are_the_generated_ones() -> None:
    generated = _load_script(GENERATOR).render()
    assert DEFINITIONS.read_text(encoding="utf-8") == generated, (
        "topology.py changed: run .venv/bin/python deploy/rabbitmq/generate_definitions.py"
    )


def test_definitions_declare_exactly_the_topology_of_the_code() -> None:
    defs = definitions()
    exchanges = {(e["name"], e["type"]) for e in defs["exchanges"]}
    expected_exchanges = {
        (topology.COMMANDS, "direct"),
        (topology.EVENTS, "topic"),
        (topology.DEAD, "topic"),
        *((tier.exchange, "fanout") for tier in topology.RETRY_TIERS),
    }
    assert exchanges == expected_exchanges
    queues = {q["name"]: q for q in defs["queues"]}
    assert sorted(queues) == sorted(topology.all_queue_names())
    for spec in topology.WORK_QUEUES:
        assert queues[spec.name]["arguments"] == spec.declare_arguments(), spec.name
        assert queues[spec.name]["durable"] is True
    for tier in topology.RETRY_TIERS:
        assert queues[tier.queue]["arguments"] == {
            "x-message-ttl": tier.delay_ms,
            "x-dead-letter-exchange": topology.COMMANDS,
        }
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    expected_bindings = {
        *((s.exchange, s.name, key) for s in topology.WORK_QUEUES for key in s.routing_keys),
        *((t.exchange, t.queue, "") for t in topology.RETRY_TIERS),
        (topology.DEAD, topology.DEAD_LETTER_QUEUE, "#"),
    }
    assert bindings == expected_bindings
    vhosts = {
        d["vhost"] for key in ("queues", "exchanges", "bindings", "policies") for d in defs[key]
    }
    assert vhosts == {"newsletter"}


def test_policies_cover_dead_lettering_and_delivery_limits() -> None:
    policies = {p["name"]: p for p in definitions()["policies"]}
    work = policies["newsletter-work-queues"]["definition"]
    assert work == {
        "dead-letter-exchange": topology.DEAD,
        "delivery-limit": topology.DELIVERY_LIMIT,
    }
    assert "delivery-limit" not in policies["newsletter-dead-letters"]["definition"], (
        "peeking at dead letters returns them to the queue; a limit there would drop them"
    )


@pytest.fixture(scope="module")
def imported_vhost() -> Iterator[tuple[str, str]]:
    """The definitions imported into a fresh vhost; yields (vhost, amqp url)."""
    name = infra.unique_name("nlops")
    user = infra.urlsplit(infra.RABBIT_BASE_URL).username or "guest"
    text = DEFINITIONS.read_text(encoding="utf-8")
    copy = json.loads(text.replace('"vhost": "newsletter"', f'"vhost": "{name}"'))
    copy["vhosts"] = [{"name": name}]
    for permission in copy["permissions"]:
        permission["user"] = user
    try:
        rabbitmqctl("import_definitions", "--format", "json", stdin=json.dumps(copy))
        parts = infra.urlsplit(infra.RABBIT_BASE_URL)
        yield name, infra.urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    finally:
        if name in rabbitmqctl("list_vhosts", "name").split():
            rabbitmqctl("delete_vhost", name)


async def test_code_topology_declares_cleanly_over_imported_definitions(
    imported_vhost: tuple[str, str],
) -> None:
    _, url = imported_vhost
    connection = await topology.connect(url)
    try:
        channel = await connection.channel()
        await topology.declare_topology(channel)  # PRECONDITION_FAILED if arguments drifted
        for name in topology.all_queue_names():
            await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()


def test_policies_apply_to_the_queues(imported_vhost: tuple[str, str]) -> None:
    name, _ = imported_vhost
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", name, "name", "policy", "--formatter", "json")
    )
    applied = {row["name"]: row["policy"] for row in rows}
    for spec in topology.WORK_QUEUES:
        assert applied[spec.name] == "newsletter-work-queues", spec.name
    for tier in topology.RETRY_TIERS:
        assert applied[tier.queue] == "newsletter-retry-tiers", tier.queue
    assert applied[topology.DEAD_LETTER_QUEUE] == "newsletter-dead-letters"


async def test_a_message_rejected_past_the_delivery_limit_is_dead_lettered(
    imported_vhost: tuple[str, str],
) -> None:
    _, url = imported_vhost
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="poison-1"),
            routing_key=topology.DISPATCHER_CONTROL.name,
        )
        queue = await channel.get_queue(topology.DISPATCHER_CONTROL.name)
        deliveries = 0
        while True:
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                break
            deliveries += 1
            await message.reject(requeue=True)
            assert deliveries <= topology.DELIVERY_LIMIT + 1, "the delivery limit is not applied"
        dead = await channel.get_queue(topology.DEAD_LETTER_QUEUE)
        for _ in range(300):
            letter = await dead.get(fail=False, timeout=5)
            if letter is not None:
                break
            await asyncio.sleep(0.1)
        assert letter is not None, "the message did not reach the dead-letter queue"
        assert letter.message_id == "poison-1"
        await letter.ack()
        assert deliveries == topology.DELIVERY_LIMIT + 1
    finally:
        await connection.close()


def test_import_script_posts_the_definitions_to_the_management_api(tmp_path: Path) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["authorization"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = _load_script(IMPORT_SCRIPT)
        status = script.import_definitions(
            base_url=f"http://127.0.0.1:{server.server_port}/",
            user="newsletter",
            password="s3cret",
            path=DEFINITIONS,
            wait_s=5,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert status == 204
    ((path, authorization, body),) = received
    assert path == "/api/definitions"
    assert authorization == "Basic " + base64.b64encode(b"newsletter:s3cret").decode()
    assert json.loads(body) == definitions()


def _broker_plugins_dir() -> Path:
    found = sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/plugins"))
    assert found, "the local RabbitMQ installation (its plugins and config schemas) is missing"
    return found[-1]


def _schema_key_pattern(mapping: str) -> re.Pattern[str]:
    parts = [r"[^.]+" if part.startswith("$") else re.escape(part) for part in mapping.split(".")]
    return re.compile(r"\.".join(parts) + r"\Z")


def test_every_rabbitmq_conf_key_is_known_to_the_broker() -> None:
    """Cuttlefish refuses to boot on an unknown key: check against the installed schemas."""
    plugins = _broker_plugins_dir()
    mappings = {
        m
        for schema in plugins.glob("*/priv/**/*.schema")
        for m in re.findall(r'\{mapping,\s*"([^"]+)"', schema.read_text(encoding="utf-8"))
    }
    patterns = [_schema_key_pattern(m) for m in mappings]
    config = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text(encoding="utf-8")
    keys = [
        line.split("=", 1)[0].strip()
        for line in config.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "consumer_timeout" in keys
    unknown = [key for key in keys if not any(p.match(key) for p in patterns)]
    assert not unknown, f"keys the broker does not know: {unknown}"
    assert not any(p.match("consumer_timeoutt") for p in patterns), "the check can fail"


def test_enabled_plugins_exist_in_the_broker() -> None:
    text = (ROOT / "deploy" / "rabbitmq" / "enabled_plugins").read_text(encoding="utf-8")
    match = re.fullmatch(r"\s*\[([a-z_,\s]*)\]\.\s*", text)
    assert match, "enabled_plugins must be one Erlang list term ending with a full stop"
    wanted = {p.strip() for p in match.group(1).split(",") if p.strip()}
    assert wanted == {"rabbitmq_management", "rabbitmq_prometheus"}
    installed = {p.name.rsplit("-", 1)[0] for p in _broker_plugins_dir().iterdir()}
    assert wanted <= installed
