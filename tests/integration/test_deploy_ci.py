"""deploy/ci/: the files `make deploy-check` runs with, checked without a container engine.

`make deploy-check` itself builds the images and runs the stack; these checks keep its inputs
honest between runs: every host port of deploy/compose.yaml can be moved off the machine's own
services, the CI override only swaps images and adds mounts, and the Debian mirror for
debootstrap is the one apt uses.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.integration.test_deploy_compose import COMPOSE, DEPLOY, SCHEMA, interpolate

sys.path.insert(0, str(DEPLOY / "ci"))
from ci_images import debian_mirror
from ci_stack import HOST_PORTS, PORT_RANGE, PROBE_PORTS, Stack, free_ports

OVERRIDE = DEPLOY / "ci" / "compose.ci.yaml"
_MOVABLE = re.compile(r"^127\.0\.0\.1:\$\{([A-Z_]+):-\d+\}:\d+$")


def _ci_env(tmp_path: Path) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    stack = Stack(work=tmp_path, maildir=tmp_path / "mail", issue=DEPLOY / "sample-issue")
    path = stack.write_env_file()
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return dict(pairs)  # type: ignore[arg-type]


def _merged(env: dict[str, str]) -> dict[str, Any]:
    """compose.yaml with the override on top, merged as compose does for the keys it uses."""
    base = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env))
    override = yaml.safe_load(interpolate(OVERRIDE.read_text(encoding="utf-8"), env))
    for name, changes in override["services"].items():
        service = base["services"][name]
        for key, value in changes.items():
            if key == "volumes":
                service[key] = [*service.get(key, []), *value]
            else:
                service[key] = value
    return base


def test_every_published_host_port_can_be_moved_and_the_check_moves_it() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            match = _MOVABLE.match(port)
            assert match, f"{name}: host port {port!r} is fixed; write 127.0.0.1:${{VAR:-n}}:n"
            assert match.group(1) in HOST_PORTS, f"{name}: deploy-check does not set {port!r}"


def test_the_check_never_publishes_on_the_machines_own_broker_or_database(
    tmp_path: Path,
) -> None:
    merged = _merged(_ci_env(tmp_path))
    published = {
        int(port.split(":")[1]) for s in merged["services"].values() for port in s.get("ports", [])
    }
    assert not published & {5672, 5432, 15672}, published


def test_the_override_merged_onto_compose_yaml_is_valid_compose(tmp_path: Path) -> None:
    merged = _merged(_ci_env(tmp_path))
    schema = __import__("json").loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(merged, schema)
    assert merged["services"]["rabbitmq"]["image"].startswith("localhost/newsletter-ci/")
    assert merged["services"]["postgres"]["image"].startswith("localhost/newsletter-ci/")
    assert merged["services"]["mailpit"]["command"][0] == "sink", "the suite's own sink"
    assert merged["services"]["proxy"]["image"].startswith("localhost/newsletter-ci/nginx")
    public = merged["services"]["subscription"]["environment"]["NEWSLETTER_PUBLIC_URL"]
    (published,) = merged["services"]["proxy"]["ports"]
    assert public == f"http://127.0.0.1:{published.split(':')[1]}", "mail links go to the proxy"


def test_the_override_only_changes_services_compose_yaml_has() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    override = yaml.safe_load(OVERRIDE.read_text(encoding="utf-8"))
    assert set(override["services"]) <= set(raw["services"])
    assert set(PROBE_PORTS) <= set(raw["services"])


def test_the_check_writes_fresh_production_grade_secrets(tmp_path: Path) -> None:
    first, second = _ci_env(tmp_path / "a"), _ci_env(tmp_path / "b")
    assert first["NEWSLETTER_SECRET_KEY"] != second["NEWSLETTER_SECRET_KEY"]
    assert len(first["NEWSLETTER_ADMIN_TOKEN"]) >= 32
    assert (tmp_path / "a" / "compose.env").stat().st_mode & 0o077 == 0


def test_the_debian_mirror_is_the_one_apt_uses(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("DEBIAN_MIRROR", raising=False)
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.local/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.local/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n",
        encoding="utf-8",
    )
    (sources / "other.list.disabled").write_text("deb http://nope/debian bookworm main\n")
    assert debian_mirror([tmp_path / "missing.list", sources]) == "http://mirror.local/debian"


def test_a_one_line_source_is_read_and_debian_mirror_overrides(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("DEBIAN_MIRROR", raising=False)
    listing = tmp_path / "sources.list"
    listing.write_text("deb [arch=amd64] http://ftp.local/debian bookworm main\n")
    assert debian_mirror([listing]) == "http://ftp.local/debian"
    monkeypatch.setenv("DEBIAN_MIRROR", "http://chosen/debian")
    assert debian_mirror([listing]) == "http://chosen/debian"


def test_host_ports_come_from_a_block_no_test_server_and_no_machine_service_uses(
    tmp_path: Path,
) -> None:
    test_servers = range(20000, 24500)  # tests/support/ports.py
    ephemeral = range(32768, 61000)
    machine = {5672, 5432, 15672, 25672, 4369}
    blocks = set(PORT_RANGE)
    assert not blocks & set(test_servers), "test servers draw from the same block"
    assert not blocks & set(ephemeral), "outgoing connections draw from the same block"
    assert not blocks & machine
    ports = [int(v) for k, v in _ci_env(tmp_path).items() if k in HOST_PORTS]
    assert len(set(ports)) == len(HOST_PORTS), "one port per published service"
    assert all(port in PORT_RANGE for port in ports), ports


def test_a_port_in_use_is_never_handed_out() -> None:
    block = range(PORT_RANGE[0], PORT_RANGE[0] + 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_ports(1, candidates=block)[0]))
        busy = taken.getsockname()[1]
        chosen = free_ports(2, candidates=block)
    assert busy not in chosen
    assert len(set(chosen)) == 2
