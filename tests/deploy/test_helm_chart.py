"""The Helm chart in deploy/helm: rendered by the pinned helm, every object valid against the pinned
Kubernetes schemas, and the properties docs/operations.md promises (probes, non-root read-only
filesystem, Secrets by reference, migration hook, egress only where configured, only real settings)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cds_service.config import known_variables
from tests.deploy.helm_render import (
    CHART,
    EXAMPLES,
    HELM,
    KUBERNETES_VERSIONS,
    Manifest,
    container_env,
    helm_template,
    one,
    only,
    pod_spec,
    render,
    schema_errors,
    tool,
    values,
)

MINIMAL = EXAMPLES / "minimal.yaml"
PRODUCTION = EXAMPLES / "production.yaml"
PACKAGED_KNOWLEDGE = Path(__file__).resolve().parents[2] / "cds_service" / "knowledge" / "osteoporosis.yaml"
# What the templates set themselves (values.schema.json keeps them out of `settings`).
CHART_MANAGED = {
    "CDS_HOST",
    "CDS_PORT",
    "CDS_WORKERS",
    "CDS_DATA_DIR",
    "CDS_AUTH_MODE",
    "CDS_PUBLIC_BASE_URL",
    "CDS_TRUSTED_ISSUERS",
    "CDS_KNOWLEDGE_FILE",
    "CDS_DB_AUTO_MIGRATE",
    "CDS_DATABASE_URL",
    "CDS_PATIENT_KEY_SECRET",
    "CDS_ADMIN_TOKEN_SHA256",
    "CDS_SMART_SESSION_SECRET",
}
SECRET_SETTINGS = {
    "CDS_DATABASE_URL",
    "CDS_PATIENT_KEY_SECRET",
    "CDS_ADMIN_TOKEN_SHA256",
    "CDS_SMART_SESSION_SECRET",
}


@pytest.fixture(scope="module")
def minimal() -> list[Manifest]:
    return render([MINIMAL])


@pytest.fixture(scope="module")
def production() -> list[Manifest]:
    return render([PRODUCTION], set_files={"knowledge.content": PACKAGED_KNOWLEDGE})


@pytest.fixture(params=["minimal", "production"])
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    manifests: list[Manifest] = request.getfixturevalue(request.param)
    return manifests


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return only(manifests, "Deployment") + only(manifests, "Job")


# --- schema validity ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_the_pinned_kubernetes_schemas(
    rendered: list[Manifest], version: str
) -> None:
    assert schema_errors(rendered, version) == []


def test_the_schema_check_catches_an_invalid_object(minimal: list[Manifest]) -> None:
    deployment = json.loads(json.dumps(one(minimal, "Deployment")))
    pod_spec(deployment)["containers"][0]["readOnlyRootFilesystem"] = True  # misplaced: not a container field
    [error] = schema_errors([deployment], KUBERNETES_VERSIONS[-1])
    assert "readOnlyRootFilesystem" in error
    hpa = json.loads(json.dumps(one(minimal, "HorizontalPodAutoscaler")))
    hpa["spec"]["minReplicas"] = "two"
    assert len(schema_errors([hpa], KUBERNETES_VERSIONS[0])) == 1


@pytest.mark.parametrize("example", [MINIMAL, PRODUCTION], ids=["minimal", "production"])
def test_helm_lint_strict_passes(example: Path) -> None:
    done = subprocess.run(
        [str(tool(HELM)), "lint", "--strict", str(CHART), "--values", str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_the_expected_objects_are_rendered(minimal: list[Manifest], production: list[Manifest]) -> None:
    kinds = sorted(manifest["kind"] for manifest in minimal)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )
    assert {"Ingress", "NetworkPolicy"} <= {manifest["kind"] for manifest in production}
    assert len(only(production, "ConfigMap")) == 2  # issuers (+ JWKS file) and knowledge


# --- probes, security, resources ------------------------------------------------------------------


def test_probes_point_at_healthz_and_readyz(rendered: list[Manifest]) -> None:
    container = pod_spec(one(rendered, "Deployment"))["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_every_pod_runs_non_root_on_a_read_only_root_filesystem(rendered: list[Manifest]) -> None:
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_writable_volumes_exactly_where_the_service_writes(rendered: list[Manifest]) -> None:
    """CDS_DATA_DIR (multiprocess metrics files) and /tmp are emptyDirs; everything else is read-only."""
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        container = spec["containers"][0]
        data_dir = next(e["value"] for e in container["env"] if e["name"] == "CDS_DATA_DIR")
        writable = {
            mount["mountPath"]
            for mount in container["volumeMounts"]
            if mount["name"] in empty_dirs and not mount.get("readOnly")
        }
        assert writable == {data_dir, "/tmp"}
        config_mounts = [m for m in container["volumeMounts"] if m["name"] not in empty_dirs]
        assert all(mount["readOnly"] is True for mount in config_mounts)


def test_resources_are_set_from_the_measured_figures(rendered: list[Manifest]) -> None:
    container = pod_spec(one(rendered, "Deployment"))["containers"][0]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    workers = int(env["CDS_WORKERS"])
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert int(resources["limits"]["cpu"]) == workers  # one core per worker process at most
    # benchmarks/sizing-results.json: ~300 MiB PSS, ~410 MiB RSS for 2 workers after the heavy record
    assert resources["requests"]["memory"] == "384Mi" and resources["limits"]["memory"] == "1Gi"
    job = pod_spec(one(rendered, "Job"))["containers"][0]
    assert set(job["resources"]) == {"requests", "limits"}


# --- settings and secrets -------------------------------------------------------------------------


def test_every_cds_variable_the_chart_sets_is_a_real_setting(rendered: list[Manifest]) -> None:
    known = set(known_variables())
    for workload in workloads(rendered):
        names = [entry["name"] for entry in container_env(workload)]
        assert len(names) == len(set(names)), names
        assert {name for name in names if name.startswith("CDS_")} <= known
        assert all(name.startswith("CDS_") for name in names)


def test_values_schema_allows_exactly_the_settings_the_chart_does_not_set() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    allowed = set(schema["properties"]["settings"]["propertyNames"]["enum"])
    assert set(known_variables()) >= CHART_MANAGED
    assert allowed == set(known_variables()) - CHART_MANAGED


def test_an_unknown_setting_is_refused_when_rendering() -> None:
    done = helm_template([MINIMAL], {"settings.CDS_FHIR_DEADLINE": "3"})  # CDS_FHIR_DEADLINE_S is real
    assert done.returncode != 0
    assert "CDS_FHIR_DEADLINE" in done.stderr
    assert helm_template([MINIMAL], {"settings.CDS_FHIR_DEADLINE_S": "3"}).returncode == 0


def test_a_chart_managed_setting_cannot_be_overridden_through_settings() -> None:
    done = helm_template([MINIMAL], {"settings.CDS_DB_AUTO_MIGRATE": "true"})
    assert done.returncode != 0 and "CDS_DB_AUTO_MIGRATE" in done.stderr


def test_secrets_are_referenced_never_inlined(rendered: list[Manifest]) -> None:
    assert only(rendered, "Secret") == []
    for workload in workloads(rendered):
        for entry in container_env(workload):
            if entry["name"] in SECRET_SETTINGS:
                assert "value" not in entry
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "cds-service"
    env = {entry["name"]: entry for entry in container_env(one(rendered, "Deployment"))}
    assert set(env) >= SECRET_SETTINGS
    assert env["CDS_ADMIN_TOKEN_SHA256"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["CDS_SMART_SESSION_SECRET"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_default_values_alone_name_what_is_missing() -> None:
    done = helm_template()
    assert done.returncode != 0
    assert "secrets.existingSecret" in done.stderr or "publicBaseUrl" in done.stderr


def test_the_pods_never_migrate_and_read_the_mounted_files(production: list[Manifest]) -> None:
    env = {entry["name"]: entry.get("value") for entry in container_env(one(production, "Deployment"))}
    assert env["CDS_DB_AUTO_MIGRATE"] == "false"
    assert env["CDS_AUTH_MODE"] == "required"
    assert env["CDS_PUBLIC_BASE_URL"] == "https://cds.example.org"
    assert env["CDS_TRUSTED_ISSUERS"] == "/etc/cds-service/issuers/trusted-issuers.yaml"
    assert env["CDS_KNOWLEDGE_FILE"] == "/etc/cds-service/knowledge/osteoporosis.yaml"
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in only(production, "ConfigMap")}
    issuers = config_maps["cds-cds-service-issuers"]
    assert set(issuers) == {"trusted-issuers.yaml", "ehr-jwks.json"}
    knowledge = config_maps["cds-cds-service-knowledge"]["osteoporosis.yaml"]
    assert knowledge == PACKAGED_KNOWLEDGE.read_text(encoding="utf-8")
    mounts = {
        m["name"]: m["mountPath"]
        for m in pod_spec(one(production, "Deployment"))["containers"][0]["volumeMounts"]
    }
    assert (
        mounts["issuers"] == "/etc/cds-service/issuers"
        and mounts["knowledge"] == "/etc/cds-service/knowledge"
    )


def test_without_a_knowledge_file_the_packaged_one_is_used() -> None:
    manifests = render([PRODUCTION])
    env = {entry["name"] for entry in container_env(one(manifests, "Deployment"))}
    assert "CDS_KNOWLEDGE_FILE" not in env
    assert [cm["metadata"]["name"] for cm in only(manifests, "ConfigMap")] == ["cds-cds-service-issuers"]
    volumes = {volume["name"] for volume in pod_spec(one(manifests, "Deployment"))["volumes"]}
    assert "knowledge" not in volumes


def test_the_settings_the_chart_renders_start_the_service(production: list[Manifest], tmp_path: Path) -> None:
    """The rendered plain settings (Secrets and mounted files replaced by local stand-ins) pass the
    service's own start-up validation."""
    from cds_service.config import load_settings

    env: dict[str, str] = {}
    for entry in container_env(one(production, "Deployment")):
        env[entry["name"]] = entry.get("value", "")
    env["CDS_DATABASE_URL"] = "postgresql+psycopg://cds@db.invalid/cds"
    env["CDS_PATIENT_KEY_SECRET"] = "x" * 40
    env["CDS_ADMIN_TOKEN_SHA256"] = "0" * 64
    env["CDS_TRUSTED_ISSUERS"] = str(tmp_path / "issuers.yaml")
    env["CDS_KNOWLEDGE_FILE"] = str(PACKAGED_KNOWLEDGE)
    env["CDS_DATA_DIR"] = str(tmp_path)
    settings = load_settings(env)
    assert settings.db_auto_migrate is False and settings.workers == 2


# --- migration hook -------------------------------------------------------------------------------


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(rendered: list[Manifest]) -> None:
    job = one(rendered, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["cds-service", "db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # On install the hook runs before the release's ConfigMaps and ServiceAccount exist.
    assert "serviceAccountName" not in pod_spec(job)
    assert all("configMap" not in volume for volume in pod_spec(job)["volumes"])
    assert (
        pod_spec(job)["containers"][0]["image"]
        == pod_spec(one(rendered, "Deployment"))["containers"][0]["image"]
    )


# --- scaling and disruption -----------------------------------------------------------------------


def test_hpa_scales_the_deployment_on_cpu(rendered: list[Manifest]) -> None:
    hpa = one(rendered, "HorizontalPodAutoscaler")
    deployment = one(rendered, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert hpa["spec"]["minReplicas"] >= 2


def test_pdb_selects_the_server_pods(rendered: list[Manifest]) -> None:
    pdb = one(rendered, "PodDisruptionBudget")
    deployment = one(rendered, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    service = one(rendered, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_graceful_shutdown_fits_the_grace_period(rendered: list[Manifest]) -> None:
    spec = pod_spec(one(rendered, "Deployment"))
    sleep_s = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful_timeout_s = 30  # cds_service.gunicorn_conf.GRACEFUL_TIMEOUT_S
    assert spec["terminationGracePeriodSeconds"] > sleep_s + graceful_timeout_s


# --- ingress and network policy -------------------------------------------------------------------


def test_ingress_terminates_tls_and_routes_only_the_cds_hooks_endpoints(production: list[Manifest]) -> None:
    ingress = one(production, "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["cds.example.org"], "secretName": "cds-example-org-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "cds.example.org"
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/cds-services", "Prefix")]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "10m"


def test_ingress_without_a_tls_secret_is_refused() -> None:
    done = helm_template([MINIMAL], {"ingress.enabled": "true", "ingress.host": "cds.example.org"})
    assert done.returncode != 0 and "ingress.tls.secretName" in done.stderr


def _egress_peers(policy: Manifest) -> list[tuple[str, tuple[int, ...]]]:
    peers = []
    for rule in policy["spec"]["egress"]:
        ports = tuple(sorted({port["port"] for port in rule["ports"]}))
        for peer in rule["to"]:
            peers.append((json.dumps(peer, sort_keys=True), ports))
    return peers


def test_network_policy_egress_only_to_dns_postgresql_and_configured_hosts(
    production: list[Manifest],
) -> None:
    policy = one(production, "NetworkPolicy")
    config: dict[str, Any] = values(PRODUCTION)["networkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # it selects the migration Job's pods too (on upgrade they need DNS and PostgreSQL only)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for workload in workloads(production):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    expected = []
    dns_peer = values(CHART / "values.yaml")["networkPolicy"]["dns"]["to"]
    expected += [(json.dumps(peer, sort_keys=True), (53,)) for peer in dns_peer]
    expected += [
        (json.dumps(peer, sort_keys=True), (config["postgresql"]["port"],))
        for peer in config["postgresql"]["to"]
    ]
    for host in config["fhirServers"] + config["jwksHosts"]:
        for cidr in host["cidrs"]:
            ipaddress.ip_network(cidr)  # a CIDR, not a DNS name
            expected.append(
                (json.dumps({"ipBlock": {"cidr": cidr}}, sort_keys=True), tuple(host.get("ports", [443])))
            )
    assert sorted(_egress_peers(policy)) == sorted(expected)
    [ingress_rule] = policy["spec"]["ingress"]
    assert ingress_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress_rule["from"] == config["ingressFrom"]


def test_network_policy_refuses_a_dns_name_as_cidr() -> None:
    done = helm_template(
        [PRODUCTION],
        {
            "networkPolicy.fhirServers[0].host": "ehr",
            "networkPolicy.fhirServers[0].cidrs[0]": "ehr.example.org",
        },
    )
    assert done.returncode != 0 and "cidrs" in done.stderr


def test_network_policy_needs_the_postgresql_peer() -> None:
    done = helm_template([MINIMAL], {"networkPolicy.enabled": "true"})
    assert done.returncode != 0 and "networkPolicy.postgresql.to" in done.stderr
