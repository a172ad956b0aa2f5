"""Services never import each other; shared code never imports a service.

They share only ``shared/`` and talk through RabbitMQ and the database. Only the console
script's composition (``newsletter_cli``) may see every service.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("subscription", "renderer", "dispatcher", "bounces")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    others = [s for s in SERVICES if s != service]
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "services" / service).rglob("*.py")
        for module in _imports(path)
        if any(module == f"services.{o}" or module.startswith(f"services.{o}.") for o in others)
    ]
    assert not offenders, "services must talk through RabbitMQ and the database:\n" + "\n".join(
        offenders
    )


def test_shared_code_imports_no_service() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "shared").rglob("*.py")
        for module in _imports(path)
        if module == "services" or module.startswith("services.")
    ]
    assert not offenders, "\n".join(offenders)


def test_nothing_reads_the_material_folder_beside_the_repo() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("shared", "services", "newsletter_cli", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if "../shared" in path.read_text(encoding="utf-8")
        and path.name != "test_architecture_contract.py"
    ]
    assert not offenders, f"the project must not read ../shared: {offenders}"
