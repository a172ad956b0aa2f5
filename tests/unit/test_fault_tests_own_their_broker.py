"""``make test`` never stops, restarts or reclusters the machine's RabbitMQ.

Tests may add and delete vhosts on the machine's broker (``tests/support/infra.py``), but a
test that stops, kills or reclusters a broker must use nodes of its own
(``tests/support/rabbit_nodes.py``, whose CLI calls always name their own node with ``-n``).
This test reads every test module and fails on a ``rabbitmqctl`` call, through any helper,
whose command would take the machine's broker down; and production code never imports the
benchmarks package that starts those nodes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROKER_WIDE = {
    "stop_app",
    "start_app",
    "stop",
    "shutdown",
    "reset",
    "force_reset",
    "join_cluster",
    "forget_cluster_node",
    "close_all_connections",
}


def _string_args(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def _name(expr: ast.expr) -> str:
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return ""


def broker_wide_calls(source: str) -> list[tuple[int, str]]:
    """(line, command) of every rabbitmqctl-like call with a broker-wide command."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        words = _string_args(node)
        # rabbitmqctl(...), or a function handed on: asyncio.to_thread(infra.rabbitmqctl, ...).
        callables = [_name(node.func), *(_name(a) for a in node.args)]
        through_cli = any("rabbitmqctl" in c for c in callables + words)
        if through_cli and "-n" not in words:
            found.extend((node.lineno, w) for w in words if w in BROKER_WIDE)
        # A list handed to subprocess: ["rabbitmqctl", "stop_app"].
        for arg in node.args:
            if isinstance(arg, ast.List):
                items = [e.value for e in arg.elts if isinstance(e, ast.Constant)]
                strings = [i for i in items if isinstance(i, str)]
                if any("rabbitmqctl" in s for s in strings) and "-n" not in strings:
                    found.extend((node.lineno, s) for s in strings if s in BROKER_WIDE)
    return found


def test_the_guard_sees_a_broker_wide_call() -> None:
    assert broker_wide_calls('infra.rabbitmqctl("stop_app")') == [(1, "stop_app")]
    assert broker_wide_calls('subprocess.run(["rabbitmqctl", "-q", "stop"])') == [(1, "stop")]
    assert broker_wide_calls('infra.rabbitmqctl("add_vhost", name)') == []
    assert broker_wide_calls('node.ctl("stop_app")') == []
    handed_on = 'await asyncio.to_thread(infra.rabbitmqctl, "start_app")'
    assert broker_wide_calls(handed_on) == [(1, "start_app")]


def test_no_test_stops_or_reclusters_the_machines_broker() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {command}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != Path(__file__).name
        for line, command in broker_wide_calls(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"tests that would take the machine's broker down: {offenders}"


def test_production_code_never_imports_the_benchmarks() -> None:
    offenders = []
    for package in ("shared", "services"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(ROOT)}"
                    for n in names
                    if n == "benchmarks" or n.startswith("benchmarks.")
                ]
    assert not offenders, f"production modules importing benchmarks: {offenders}"
