"""deploy/kubernetes: every manifest valid against the Kubernetes schemas, and wired right.

Built-in kinds are validated with ``kubernetes-validate`` (the Kubernetes JSON schemas ship in
that PyPI package, strict mode: unknown fields fail). KEDA's objects and the kustomization,
which those schemas do not know, get the structural checks below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from newsletter_cli.main import app as newsletter_app
from services.bounces.settings import BouncesSettings
from shared.messaging.topology import all_queue_names
from shared.settings import Settings
from tests.integration.test_deploy_compose import known_setting_names

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}
SERVICES = ("subscription", "renderer", "dispatcher", "bounces")


def documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    found = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text(encoding="utf-8")):
            if doc:
                found.append((name, doc))
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def test_kustomization_lists_every_manifest_and_generates_the_secret() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    generator = kustomization["secretGenerator"][0]
    assert generator["name"] == "newsletter-secrets"
    assert generator["envs"] == ["secrets.env"]
    example = (MANIFESTS / "secrets.env.example").read_text(encoding="utf-8")
    assert "NEWSLETTER_SECRET_KEY=" in example
    assert "NEWSLETTER_ADMIN_TOKEN=" in example


@pytest.mark.parametrize(
    ("source", "doc"),
    [d for d in documents() if (d[1]["apiVersion"], d[1]["kind"]) not in CUSTOM_KINDS],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_manifest_is_valid_kubernetes(source: str, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{source}: {doc['kind']}: {err.message} at {list(err.path)}")


def test_validation_rejects_a_broken_deployment() -> None:
    """Guard against validating nothing."""
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_deployment_with_probes_resources_and_secrets(service: str) -> None:
    deployment = by_kind("Deployment")[f"newsletter-{service}"]
    spec = deployment["spec"]
    template_labels = spec["template"]["metadata"]["labels"]
    for key, value in spec["selector"]["matchLabels"].items():
        assert template_labels.get(key) == value, "the selector must match the pod labels"
    (container,) = spec["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):  # fmt: skip
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{service} {probe}"
        assert get["port"] in ports, f"{service} {probe} points at an unknown port"
    requests = container["resources"]["requests"]
    assert requests.get("cpu")
    assert requests.get("memory")
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "newsletter-config", "secretRef": "newsletter-secrets"}
    assert not any("value" in e for e in container.get("env", [])), "no literal values in env"
    result = CliRunner().invoke(newsletter_app, [*container["args"], "--help"])
    assert result.exit_code == 0, result.output
    service_doc = by_kind("Service")[f"newsletter-{service}"]
    assert service_doc["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_ports_match_the_settings_defaults() -> None:
    defaults = Settings.model_fields
    bounces = BouncesSettings.model_fields
    (config,) = by_kind("ConfigMap").values()
    expected = {
        "newsletter-subscription": {
            defaults["subscription_port"].default,
            int(config["data"]["NEWSLETTER_SUBSCRIPTION_HEALTH_PORT"]),
        },
        "newsletter-renderer": {defaults["renderer_probe_port"].default},
        "newsletter-dispatcher": {defaults["dispatcher_probe_port"].default},
        "newsletter-bounces": {
            bounces["bounces_http_port"].default,
            bounces["bounces_smtp_port"].default,
        },
    }
    for name, ports in expected.items():
        (container,) = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
        assert {p["containerPort"] for p in container["ports"]} == ports, name


def test_configmap_holds_only_settings_the_code_reads_and_no_secret() -> None:
    (config,) = by_kind("ConfigMap").values()
    assert set(config["data"]) <= known_setting_names()
    for secret in ("NEWSLETTER_SECRET_KEY", "NEWSLETTER_ADMIN_TOKEN", "NEWSLETTER_DATABASE_URL"):
        assert secret not in config["data"], f"{secret} belongs in the Secret"


def test_migrations_are_a_one_shot_job() -> None:
    job = by_kind("Job")["newsletter-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_dispatcher_scales_on_queue_depth_with_keda() -> None:
    scaled = by_kind("ScaledObject")["newsletter-dispatcher"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in by_kind("Deployment")
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    auth_names = set(by_kind("TriggerAuthentication"))
    queues = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert int(trigger["metadata"]["value"]) > 0
        assert trigger["authenticationRef"]["name"] in auth_names
        queues.add(trigger["metadata"]["queueName"])
    assert "dispatcher.deliveries" in queues
    assert queues <= set(all_queue_names()), "KEDA watches queues the topology declares"
    (auth,) = by_kind("TriggerAuthentication").values()
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["name"] == "newsletter-secrets"
    assert f"{ref['key']}=" in (MANIFESTS / "secrets.env.example").read_text(encoding="utf-8")


def test_every_object_lives_in_the_namespace() -> None:
    for source, doc in documents():
        if doc["kind"] == "Namespace":
            continue
        assert doc["metadata"].get("namespace") == "newsletter", f"{source}: {doc['kind']}"


def test_disruption_budgets_select_existing_deployments() -> None:
    deployments = by_kind("Deployment")
    budgets = by_kind("PodDisruptionBudget")
    assert set(budgets) == {"newsletter-subscription", "newsletter-dispatcher"}
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"], name
