"""The Kubernetes deploy kit (deploy/kubernetes/, docs/deploy-kubernetes.md) cannot drift from
the code: every manifest validates against Kubernetes' own schemas (strict: no unknown field),
the Role grants exactly the verbs the provider uses, the NetworkPolicy selects the pods the
provider labels on the port it gives them, the gateway's environment is a valid `uplodr serve`
configuration (click parses every value, the Kubernetes provider accepts the result), and the
doc names every file and only variables uplodr reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s_api import restricted_violations
from tests.support.k8s_schema import problems
from tests.test_deploy_docs import (
    check_invocation,
    commands,
    fenced_commands,
    known_variables,
    uplodr_invocations,
)
from uplodr.cli.main import main
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE
from uplodr.machines.kubernetes import GRPC_PORT, VERBS, KubernetesConfig
from uplodr.machines.settings import ProviderSettings

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "deploy" / "kubernetes"
DOC = REPO / "docs" / "deploy-kubernetes.md"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KIT.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((f"{path.name}: {document['kind']}", document))
    return found


def one(kind: str) -> dict[str, Any]:
    (document,) = [d for _, d in manifests() if d["kind"] == kind]
    return document


@pytest.mark.parametrize("where, document", manifests(), ids=[w for w, _ in manifests()])
def test_every_manifest_validates_against_the_kubernetes_schemas(
    where: str, document: dict[str, Any]
) -> None:
    assert problems(document) == [], where
    assert document["metadata"].get("namespace", "uplodr") == "uplodr" or document["kind"] == (
        "Namespace"
    )


def test_the_kit_has_every_part() -> None:
    kinds = sorted(d["kind"] for _, d in manifests())
    assert kinds == [
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


def test_the_role_grants_exactly_the_verbs_the_provider_uses_on_pods() -> None:
    (rule,) = one("Role")["rules"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["pods"]
    assert sorted(rule["verbs"]) == sorted(VERBS)
    binding = one("RoleBinding")
    assert binding["roleRef"]["name"] == one("Role")["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject["name"] == one("ServiceAccount")["metadata"]["name"]
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == subject["name"]


def test_the_gateway_meets_the_restricted_profile_it_enforces_and_is_probed() -> None:
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = one("Service")
    assert service["spec"]["selector"] == one("Deployment")["spec"]["selector"]["matchLabels"]


def test_the_network_policy_admits_only_the_gateway_to_the_workers_grpc_port() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == {MARKER_TAG: MARKER_VALUE}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    (source,) = ingress["from"]
    gateway = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"] == gateway
    assert ingress["ports"] == [{"protocol": "TCP", "port": GRPC_PORT}]


def test_the_gateway_env_is_a_valid_serve_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["UPLODR_K8S_IMAGE"] == container["image"]  # workers run the gateway's image
    assert {"POD_NAME", "POD_UID"} <= set(env)  # the downward API: ownerReferences
    known = known_variables()
    for name in [n for n in os.environ if n.startswith("UPLODR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if value is not None:
            assert name in known or name.startswith("POD_"), name
            monkeypatch.setenv(name, value)
    with main.make_context("uplodr", ["serve"]) as group:
        context = commands()["serve"].make_context("serve", container["args"][1:], parent=group)
    params = context.params
    assert params["provider"] == "kubernetes"
    assert params["host"] == "0.0.0.0" and params["port"] == 8080
    options = {k: v for k, v in params.items() if k.startswith("k8s_") and v}
    settings = ProviderSettings(
        memory_mb=params["machine_memory"] // (1024 * 1024),
        cpus=params["machine_cpus"],
        options=options,
        env={"POD_NAME": "gw-1", "POD_UID": "u-1"},
    )
    config = KubernetesConfig.from_settings(settings)
    assert (config.image, config.memory_mb, config.cpus) == (container["image"], 1024, 1)
    assert config.owner is not None


def test_the_doc_applies_every_manifest_and_its_commands_exist() -> None:
    text = DOC.read_text()
    for path in KIT.glob("*.yaml"):
        assert f"deploy/kubernetes/{path.name}" in text or "deploy/kubernetes/" in text
    for line in fenced_commands(text):
        for args in uplodr_invocations(line):
            check_invocation(args, str(DOC))
