"""deploy/compose.yaml: valid against the compose-spec schema and wired the way the suite runs.

The schema is vendored (tests/fixtures/compose-spec.json, from the check-jsonschema package);
variables are interpolated first with the values of deploy/compose.env.example, as
``docker compose`` would, so a variable missing from the example fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from newsletter_cli.main import app as newsletter_app
from services.bounces.settings import BouncesSettings
from services.dispatcher.settings import DispatcherSettings
from services.subscription.ops.queue_reader import QueueStatsSettings
from services.subscription.policy import SignupPolicy
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
SUITE_SERVICES = ("subscription", "renderer", "dispatcher", "bounces")
_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value not in (None, "") else arg
        if op in (":?", "?"):
            if not value:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return _VARIABLE.sub(substitute, text)


def known_setting_names() -> set[str]:
    """Every ``NEWSLETTER_*`` variable some process of the suite reads."""
    models = (Settings, DispatcherSettings, BouncesSettings, SignupPolicy, QueueStatsSettings)
    names = {f"NEWSLETTER_{f.upper()}" for model in models for f in model.model_fields}
    return names | {"NEWSLETTER_FROM"}


def example_env() -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "compose.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    loaded = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(example_env())


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)


def test_the_schema_catches_mistakes() -> None:
    """Guard against a schema that accepts anything."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = {"services": {"web": {"image": "x", "restart": "no", "ports": [{"bogus": 1}]}}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_secrets_must_be_set_in_the_environment() -> None:
    env = example_env()
    del env["NEWSLETTER_SECRET_KEY"]
    with pytest.raises(MissingVariable, match="NEWSLETTER_SECRET_KEY"):
        load_compose(env)


def test_runs_the_whole_suite(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "rabbitmq", "rabbitmq-definitions", "postgres", "mailpit", "migrate",
        *SUITE_SERVICES, "proxy", "prometheus", "grafana",
    }  # fmt: skip
    assert expected <= set(services)
    assert "management" in services["rabbitmq"]["image"], "the management plugin is enabled"
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert any("8025" in port for port in services["mailpit"]["ports"]), "Mailpit's web inbox"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_migrations_run_once_before_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["rabbitmq-definitions"]["restart"] == "no"
    for name in SUITE_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["rabbitmq-definitions"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy", name


def test_dispatcher_can_run_several_replicas(compose: dict[str, Any]) -> None:
    dispatcher = compose["services"]["dispatcher"]
    assert "container_name" not in dispatcher, "a fixed name prevents --scale"
    assert "ports" not in dispatcher, "a fixed host port prevents --scale"
    assert int(dispatcher["deploy"]["replicas"]) >= 2


def test_every_service_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    runner = CliRunner()
    for name, service in compose["services"].items():
        if "build" not in service or "entrypoint" in service:
            continue
        result = runner.invoke(newsletter_app, [*service["command"], "--help"])
        assert result.exit_code == 0, (
            f"{name}: newsletter {' '.join(service['command'])}: {result.output}"
        )


def test_environment_names_are_settings_the_code_reads(compose: dict[str, Any]) -> None:
    known = known_setting_names()
    for name in SUITE_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = {key for key in environment if key.startswith("NEWSLETTER_")} - known
        assert not unknown, f"{name}: settings no code reads: {unknown}"
        Settings.model_validate(
            {
                k if k == "NEWSLETTER_FROM" else k.removeprefix("NEWSLETTER_").lower(): v
                for k, v in environment.items()
            }
        )


def test_prometheus_and_grafana_reach_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    for job in scrape["scrape_configs"]:
        hosts = [t.split(":")[0] for s in job.get("static_configs", []) for t in s["targets"]]
        hosts += [n for s in job.get("dns_sd_configs", []) for n in s["names"]]
        for host in hosts:
            assert host in services, f"Prometheus job {job['job_name']} scrapes unknown {host}"
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    url = yaml.safe_load(datasources.read_text(encoding="utf-8"))["datasources"][0]["url"]
    assert url == "http://prometheus:9090"
    assert "prometheus" in services


def test_readers_reach_one_public_origin_through_the_nginx_proxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy = services["proxy"]
    environment = proxy["environment"]
    template = (DEPLOY / "nginx" / "templates" / "newsletter.conf.template").read_text("utf-8")
    used = set(re.findall(r"\$\{(NEWSLETTER_[A-Z_]+)\}", template))
    assert used, "the template takes its upstreams from the environment"
    assert used <= set(environment), f"the proxy sets none of {used - set(environment)}"
    assert re.match(environment["NGINX_ENVSUBST_FILTER"], "NEWSLETTER_PROXY_PORT")
    assert not re.match(environment["NGINX_ENVSUBST_FILTER"], "HOSTNAME"), "nginx's own $vars stay"
    assert "./nginx/templates:/etc/nginx/templates:ro" in proxy["volumes"]
    subscription_env = services["subscription"]["environment"]
    subscription_port = Settings.model_fields["subscription_port"].default
    renderer_port = Settings.model_fields["renderer_probe_port"].default
    assert environment["NEWSLETTER_SUBSCRIPTION_UPSTREAM"] == f"subscription:{subscription_port}"
    assert environment["NEWSLETTER_RENDERER_UPSTREAM"] == f"renderer:{renderer_port}"
    assert subscription_env["NEWSLETTER_HTTP_HOST"] == "0.0.0.0"  # inside its container
    (published,) = proxy["ports"]
    host_port = int(published.split(":")[1])
    container_port = int(published.split(":")[2])
    assert container_port == int(environment["NEWSLETTER_PROXY_PORT"])
    public = subscription_env["NEWSLETTER_PUBLIC_URL"]
    assert public.rstrip("/").endswith(f":{host_port}"), f"{public} is not the proxy's port"
    assert "ports" not in services["subscription"], "readers come in through the proxy only"
    assert set(proxy["depends_on"]) == {"subscription", "renderer"}
