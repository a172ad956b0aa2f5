"""deploy/Dockerfile: parsed and checked without a container engine.

Checks that what the image copies exists and is not excluded by its .dockerignore, that the
entry point is the project's console script and each service command exists, that it runs as
a non-root user and exposes the ports the settings default to, and that every data file the
services need (templates, catalogs, migrations) is packaged by ``pip install .``.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import sys
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages
from typer.testing import CliRunner

from newsletter_cli.main import app as newsletter_app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
# Files that only developers' tools read (pybabel's extraction config), never a running service.
BUILD_ONLY_FILES = {"babel.cfg"}
KNOWN_INSTRUCTIONS = {
    "FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT",
    "CMD", "LABEL", "STOPSIGNAL", "HEALTHCHECK", "VOLUME", "SHELL", "ONBUILD",
}  # fmt: skip


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def ignored(path: str) -> bool:
    """BuildKit .dockerignore semantics for the patterns used here (last match wins)."""
    verdict = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = {pattern, pattern.removesuffix("/**"), pattern.removeprefix("**/")}
        if any(fnmatch.fnmatch(path, c) or path.startswith(c.removesuffix("/**") + "/")
               for c in candidates if c != "**") or pattern == "**":  # fmt: skip
            verdict = not negate
    return verdict


def test_dockerfile_uses_only_known_instructions_and_builds_in_stages() -> None:
    parsed = instructions()
    unknown = {keyword for keyword, _ in parsed} - KNOWN_INSTRUCTIONS
    assert not unknown, unknown
    stages = [rest for keyword, rest in parsed if keyword == "FROM"]
    assert len(stages) == 2, "a build stage and a slim runtime stage"
    assert any(keyword == "COPY" and rest.startswith("--from=build") for keyword, rest in parsed), (
        "the runtime stage takes the virtualenv from the build stage"
    )


def test_everything_copied_from_the_context_exists_and_is_not_ignored() -> None:
    for keyword, rest in instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by the .dockerignore"
    assert ignored("tests/unit/test_settings.py"), "tests stay out of the build context"
    assert ignored(".venv/bin/python")
    assert not ignored("services/renderer/__init__.py")


def test_entry_point_is_the_newsletter_command_and_runs_as_non_root() -> None:
    parsed = dict(instructions())
    assert json.loads(parsed["ENTRYPOINT"]) == ["newsletter"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "newsletter" in project["project"]["scripts"]
    user = parsed["USER"].split(":")[0]
    assert user not in {"root", "0"}
    exposed = {int(p) for p in parsed["EXPOSE"].split()}
    defaults = Settings.model_fields
    assert exposed == {
        defaults["subscription_port"].default,
        defaults["renderer_probe_port"].default,
        defaults["dispatcher_probe_port"].default,
    }
    assert "NEWSLETTER_HTTP_HOST=0.0.0.0" in parsed["ENV"], "listen beyond the container"


def test_each_process_of_the_image_is_a_cli_command() -> None:
    runner = CliRunner()
    for command in (["subscription", "serve"], ["renderer", "run"], ["dispatcher", "run"],
                    ["bounces", "serve"], ["db", "upgrade"], ["queues"]):  # fmt: skip
        result = runner.invoke(newsletter_app, [*command, "--help"])
        assert result.exit_code == 0, f"newsletter {' '.join(command)}: {result.output}"


def test_pip_install_packages_every_data_file_the_services_need() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools_config = project["tool"]["setuptools"]
    include = setuptools_config["packages"]["find"]["include"]
    packages = set(find_namespace_packages(where=str(ROOT), include=include))
    assert "shared.db.migrations.versions" in packages, "migrations would be missing"
    patterns = [p for globs in setuptools_config["package-data"].values() for p in globs]
    missing = []
    for top in ("shared", "services", "newsletter_cli"):
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            if path.name in BUILD_ONLY_FILES:
                continue
            package = ".".join(path.parent.relative_to(ROOT).parts)
            if package not in packages or not any(fnmatch.fnmatch(path.name, p) for p in patterns):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"not installed into the image: {missing}"


def test_the_rabbitmq_import_script_needs_only_the_standard_library() -> None:
    script = ROOT / "deploy" / "rabbitmq" / "import_definitions.py"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)
