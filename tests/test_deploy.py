"""deploy/: what can be checked without a Docker engine or a cluster — every YAML parses,
compose and Kubernetes files have the shape Herald needs (Kubernetes against the API's
schemas, offline), systemd units pass `systemd-analyze verify` — and the production topology
run for real with plain processes: two `herald api`, two `herald worker`, one database."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.fakes.smtp import FakeSmtp
from tests.stack import ROOT, VENV_BIN, Stack, free_port, pinpoint
from tests.test_metrics import Samples, scrape, value, wait_for
from worker.core.config import Settings

DEPLOY = ROOT / "deploy"
KNOWN = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
REQUIRED = {"HERALD_DATABASE_URL", "HERALD_BROKER_URL", "HERALD_REDIS_URL", "HERALD_SECRET_KEY",
            "HERALD_ROOT_ACCESS_KEY_ID", "HERALD_ROOT_SECRET_ACCESS_KEY"}
K8S_VERSION = "1.30.0"


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def env_names(text_: str) -> set[str]:
    return {line.split("=", 1)[0].lstrip("# ").strip() for line in text_.splitlines()
            if re.match(r"^#? ?HERALD_[A-Z_]+=", line)}


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert {f.relative_to(DEPLOY).as_posix() for f in files} >= {
        "compose.yaml", "k8s/api.yaml", "k8s/worker.yaml", "k8s/migrate-job.yaml",
        "k8s/configmap.yaml", "k8s/secret.example.yaml", "k8s/kustomization.yaml"}
    for path in files:
        assert load_all(path), path


# --- compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def herald_command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "exec form, so arguments are not re-split by a shell"
    return [str(part) for part in command]


def test_compose_runs_migrate_then_two_apis_behind_one_port_and_workers(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "haproxy"} <= set(services)
    herald = {name: s for name, s in services.items() if "build" in s}
    assert set(herald) == {"migrate", "api", "worker"}
    # One image for all three, built from deploy/Dockerfile with the repository as context.
    for service in herald.values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / "compose.yaml").parent.joinpath("..", "deploy", "Dockerfile").exists()

    assert herald_command(services["migrate"]) == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    api = herald_command(services["api"])
    assert api[0] == "api"
    api_port = int(api[api.index("--port") + 1])
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert herald_command(services["worker"])[0] == "worker"
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"

    # Every dependency and named volume exists.
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
            else:
                assert source in compose["volumes"], source

    # HAProxy: the one published port, in front of the api service's port, checking /readyz.
    proxy = services["haproxy"]
    assert [p.split(":")[-1] for p in proxy["ports"]] == ["8080"]
    config = (DEPLOY / "haproxy.cfg").read_text()
    template = re.search(r"^\s*server-template\s+\S+\s+\S+\s+(\S+):(\d+)", config, re.M)
    assert template and template.group(1) == "api" and int(template.group(2)) == api_port
    assert re.search(r"^\s*bind\s+:8080\b", config, re.M)
    assert "option httpchk GET /readyz" in config
    # Longer than the longest SendUsersMessages wait (HERALD_SYNC_TIMEOUT_S <= 300 s is
    # allowed, the shipped default is 10 s).
    server_timeout = re.search(r"timeout server (\d+)s", config)
    assert server_timeout and int(server_timeout.group(1)) > 10


def test_compose_environment_is_designs_herald_variables(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("migrate", "api", "worker"):
        environment = services[name]["environment"]
        assert set(environment) >= REQUIRED, name
        assert set(environment) <= KNOWN, set(environment) - KNOWN
        # A ${VAR:-default} reference resolves to its default when VAR is unset.
        values = [re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", str(environment[key]))
                  for key in ("HERALD_DATABASE_URL", "HERALD_BROKER_URL", "HERALD_REDIS_URL")]
        hosts = {re.sub(r"^[a-z+]+://([^@/]*@)?([^:/]+).*$", r"\2", value) for value in values}
        assert hosts <= set(services), hosts
        assert environment["HERALD_SECRET_KEY"].startswith("${HERALD_SECRET_KEY:?")
    for reference in re.findall(r"\$\{[^}]*\}", (DEPLOY / "compose.yaml").read_text()):
        assert re.fullmatch(r"\$\{[A-Z_]+(:?[-?][^}]*)?\}", reference), reference
    assert env_names((DEPLOY / "herald.env.example").read_text()) <= KNOWN
    # RabbitMQ is offered as the broker: a profile whose vhost and user the documented URL names.
    rabbit = services["rabbitmq"]
    assert rabbit["profiles"] == ["rabbitmq"] and rabbit["restart"] == "unless-stopped"
    documented = re.search(r"HERALD_BROKER_URL=(amqp://\S+)",
                           (DEPLOY / "compose.yaml").read_text())
    assert documented and documented.group(1).endswith(
        "@rabbitmq:5672/" + rabbit["environment"]["RABBITMQ_DEFAULT_VHOST"])
    for name in ("api", "worker", "postgres", "redis", "haproxy"):
        assert services[name]["restart"] == "unless-stopped", name


def test_dockerfile_builds_the_package_and_runs_herald_unprivileged() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for source in ("pyproject.toml", "api", "worker", "migrations"):
        assert re.search(rf"^COPY {re.escape(source)}\b", dockerfile, re.M), source
        assert f"!{source}" in (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert 'ENTRYPOINT ["herald"]' in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {path.name: load_all(path) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            if path.name != "kustomization.yaml"}


def by_kind(manifests: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for docs in manifests.values() for doc in docs
            if doc["kind"] == kind}


def test_kubernetes_manifests_match_the_api_schemas(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    for docs in manifests.values():
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The same check refuses a manifest with a misspelt field, so the pass above means something.
    deployment = copy.deepcopy(by_kind(manifests, "Deployment")["herald-api"])
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)

    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == set(manifests) - {"secret.example.yaml"}, "secrets stay out of kustomize"


def test_kubernetes_topology(manifests: dict[str, list[dict[str, Any]]]) -> None:
    deployments = by_kind(manifests, "Deployment")
    config = by_kind(manifests, "ConfigMap")["herald-config"]
    secret = by_kind(manifests, "Secret")["herald-secrets"]
    assert set(secret["stringData"]) >= {"HERALD_SECRET_KEY", "HERALD_ROOT_ACCESS_KEY_ID",
                                         "HERALD_ROOT_SECRET_ACCESS_KEY"}
    variables = set(config["data"]) | set(secret["stringData"])
    assert variables >= REQUIRED
    assert {v for v in variables if v.startswith("HERALD_")} <= KNOWN

    def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
        return list(workload["spec"]["template"]["spec"]["containers"])

    job = by_kind(manifests, "Job")["herald-migrate"]
    workloads = {"api": deployments["herald-api"], "worker": deployments["herald-worker"],
                 "migrate": job}
    for command, workload in workloads.items():
        (container,) = containers(workload)
        assert container["args"][0] == command
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"herald-config", "herald-secrets"}

    api = deployments["herald-api"]
    assert api["spec"]["replicas"] >= 2
    (api_container,) = containers(api)
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = by_kind(manifests, "Service")["herald-api"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in (
        "http", api_container["ports"][0]["containerPort"])

    hpa = by_kind(manifests, "HorizontalPodAutoscaler")["herald-worker"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "herald-worker"}
    assert hpa["spec"]["minReplicas"] >= 1 < hpa["spec"]["maxReplicas"]


# --- systemd -----------------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path: Path) -> None:
    units = DEPLOY / "systemd"
    assert {p.name for p in units.glob("*.service")} == {
        "herald-api.service", "herald-worker@.service", "herald-migrate.service"}
    commands = {}
    for unit in units.glob("*.service"):
        body = unit.read_text()
        exec_start = re.search(r"^ExecStart=(\S+) (\S+)", body, re.M)
        assert exec_start, unit
        commands[unit.name] = exec_start.group(2)
        assert "EnvironmentFile=/etc/herald/herald.env" in body
        # Point the unit at this machine's herald and an env file, so verify can check them.
        (tmp_path / unit.name).write_text(
            body.replace(exec_start.group(1), str(VENV_BIN / "herald"))
            .replace("/etc/herald/herald.env", str(tmp_path / "herald.env")))
    assert commands == {"herald-api.service": "api", "herald-worker@.service": "worker",
                        "herald-migrate.service": "migrate"}
    assert env_names((units / "herald.env.example").read_text()) >= REQUIRED
    assert env_names((units / "herald.env.example").read_text()) <= KNOWN
    (tmp_path / "herald.env").write_text((units / "herald.env.example").read_text())
    shutil.copy(tmp_path / "herald-worker@.service", tmp_path / "herald-worker@1.service")

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / name) for name in (
            "herald-api.service", "herald-migrate.service", "herald-worker@1.service"))],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


# --- the topology, for real ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(smtp: FakeSmtp) -> Iterator[Stack]:
    stack = Stack("fleet", env={
        "HERALD_SMTP_URL": smtp.url, "HERALD_METRICS_CACHE_S": "0.2"})
    try:
        stack.start_worker(concurrency=1)
        stack.start_worker(concurrency=1)
        stack.start_api()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_two_apis_and_two_workers_deliver_everything_and_each_api_reports_the_fleet(
    fleet: Stack, smtp: FakeSmtp,
) -> None:
    (_, first), (_, second) = fleet.apis
    tag = uuid.uuid4().hex[:6]
    admin = pinpoint(first)
    app_id = admin.create_app(CreateApplicationRequest={"Name": "fleet"})[
        "ApplicationResponse"]["Id"]
    admin.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
        "FromAddress": "ops@herald.test", "Identity": "herald.test", "Enabled": True})
    users = [f"u{i}" for i in range(10)]
    admin.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": f"{user}-{n}", "ChannelType": "EMAIL", "Address": f"{user}-{n}-{tag}@fleet.test",
         "User": {"UserId": user}} for user in users for n in range(2)]})
    refused = f"u0-0-{tag}@fleet.test"
    requests = 8
    smtp.script(refused, [550] * requests)

    def send(number: int) -> dict[str, Any]:
        api = (first, second)[number % 2]
        return pinpoint(api).send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
            "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
                "Subject": {"Data": f"Fleet {number}"}, "TextPart": {"Data": "Hello"}}}},
            "Users": {user: {} for user in users},
        })["SendUsersMessageResponse"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(requests)))
    statuses = [r["DeliveryStatus"] for a in answers for e in a["Result"].values()
                for r in e.values()]
    assert len(statuses) == requests * 20

    engine = create_engine(fleet.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "select delivery_status, final, count(*) from deliveries group by 1, 2"
        )).all()
    engine.dispose()
    assert {(status, final): n for status, final, n in rows} == {
        ("SUCCESSFUL", True): requests * 19, ("PERMANENT_FAILURE", True): requests}

    def fleet_counts(samples: Samples) -> tuple[float, float]:
        return (value(samples, "herald_deliveries_total", channel="EMAIL", status="SUCCESSFUL"),
                value(samples, "herald_deliveries_total", channel="EMAIL",
                      status="PERMANENT_FAILURE"))

    for api in (first, second):
        samples = wait_for(lambda api=api: scrape(api),
                           lambda s: fleet_counts(s) == (requests * 19, requests))
        assert fleet_counts(samples) == (requests * 19, requests), api
        assert value(samples, "herald_provider_latency_seconds_count", channel="EMAIL",
                     provider="smtp") == requests * 20
        # Request counts are each process's own: half the sends went through each API.
        assert value(samples, "herald_http_requests_total", operation="send_users_messages",
                     method="POST", status="200") == requests / 2


def test_api_processes_sharing_a_port_add_up_their_request_metrics(fleet: Stack) -> None:
    """`herald api --workers 2`: whichever process answers /metrics shows both processes'
    requests (prometheus-client's multiprocess mode, set up by `herald api`)."""
    port = free_port()
    log = open(ROOT / "test-artifacts" / "fleet-api-workers.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(VENV_BIN / "herald"), "api", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        env={k: v for k, v in fleet.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "api did not start"
            time.sleep(0.2)
        probes = 40
        # A new connection each, so both processes take some of them.
        for _ in range(probes):
            assert httpx.get(url + "/healthz").status_code == 200
        for _ in range(6):
            seen = value(scrape(url), "herald_http_requests_total", operation="healthz",
                         method="GET", status="200")
            assert seen >= probes + 1, seen  # every process's probes, in every scrape
    finally:
        os.killpg(process.pid, 15)
        process.wait(20)
        log.close()
