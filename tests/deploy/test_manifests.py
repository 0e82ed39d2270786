"""Deployment artifacts agree with each other and with the runtime: manifests, Dockerfiles, settings, routes.

Needs no container engine and no cluster. Schema validation uses `kubernetes-validate` (offline: it bundles
the schemas) when it is installed, and is skipped otherwise.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from runtime.constants import MODEL_NAME
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.31"  # oldest release we promise to deploy on


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path) -> dict[str, Any]:
    (doc,) = load(path)
    return doc


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one(K8S / "deployment.yaml")


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return one(DEPLOY / "kserve" / "inferenceservice.yaml")


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec we ship: the Deployment's template and the KServe predictor (an inline pod spec)."""
    yield "deployment", one(K8S / "deployment.yaml")["spec"]["template"]["spec"]
    yield "deployment-gpu", one(K8S / "gpu" / "deployment.yaml")["spec"]["template"]["spec"]
    yield "kserve", one(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]


POD_SPECS = [pytest.param(spec, id=name) for name, spec in pod_specs()]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container}


# -- parsing and required fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(p, id=str(p.relative_to(DEPLOY))) for p in MANIFESTS])
def test_manifest_parses_with_required_fields(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        body = "stringData" if doc["kind"] == "Secret" else "spec"
        assert {"apiVersion", "kind", "metadata", body} <= doc.keys()
        assert doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "neuraltrade-edge"


def test_kustomization_lists_every_k8s_manifest_but_the_secret_example() -> None:
    kustomization = one(K8S / "kustomization.yaml")
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == on_disk
    images = {i["name"] for i in kustomization["images"]}
    deployed = one(K8S / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert deployed.rsplit(":", 1)[0] in images


def test_kinds_and_api_versions() -> None:
    got = {(d["apiVersion"], d["kind"]) for p in MANIFESTS for d in load(p)}
    assert got == {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "Secret"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    }


# -- probes -------------------------------------------------------------------------------------------------


def test_deployment_probes_use_ready_and_health(deployment: dict[str, Any]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    p = probes(container)
    assert p["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert p["livenessProbe"]["httpGet"]["path"] == "/health"
    assert p["startupProbe"]["httpGet"]["path"] == "/health"
    # Startup budget (period x threshold) must cover loading and warming the model.
    assert p["startupProbe"]["periodSeconds"] * p["startupProbe"]["failureThreshold"] >= 30


def test_kserve_readiness_uses_the_v2_protocol(isvc: dict[str, Any]) -> None:
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert probes(container)["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def runtime_routes() -> set[str]:
    from runtime.http.app import create_app

    return {str(getattr(r, "path", "")) for r in create_app(Settings()).routes}


@pytest.mark.parametrize("spec", POD_SPECS)
def test_probe_paths_are_routes_of_the_runtime(spec: dict[str, Any]) -> None:
    routes = runtime_routes()
    paths = {p["httpGet"]["path"] for c in spec["containers"] for p in probes(c).values()}
    v2 = {p for p in paths if p.startswith("/v2/")}
    assert paths - v2 <= routes, f"probe paths {sorted(paths - v2 - routes)} are not routes of runtime.http.app"
    # Open Inference Protocol health endpoints (served by the runtime once issue 5 lands).
    oip = {"/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"}
    assert v2 <= oip
    if any(r.startswith("/v2/") for r in routes):
        assert v2 <= routes, f"v2 probe paths {sorted(v2 - routes)} are not routes of runtime.http.app"


@pytest.mark.parametrize("spec", POD_SPECS)
def test_probes_target_the_serving_port(spec: dict[str, Any]) -> None:
    (container,) = spec["containers"]
    names = {p.get("name"): p["containerPort"] for p in container["ports"]}
    for kind, probe in probes(container).items():
        port = probe["httpGet"]["port"]
        assert port in names or port in names.values(), f"{kind} port {port!r} is not a container port"


# -- ports, settings, secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", POD_SPECS)
def test_container_port_is_edge_port(spec: dict[str, Any]) -> None:
    (container,) = spec["containers"]
    env = env_of(container)
    assert env["EDGE_HOST"] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [int(env["EDGE_PORT"])]


@pytest.mark.parametrize("spec", POD_SPECS)
def test_every_edge_variable_is_a_valid_setting(spec: dict[str, Any]) -> None:
    (container,) = spec["containers"]
    values = {}
    for name, value in env_of(container).items():
        if not name.startswith("EDGE_"):
            continue
        field = name.removeprefix("EDGE_").lower()
        assert field in Settings.model_fields, f"{name} is not a runtime setting"
        if isinstance(value, str):
            values[field] = value
    Settings.model_validate(values)  # raises on a bad value


def test_metrics_annotations_point_at_the_runtime(deployment: dict[str, Any]) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert annotations["prometheus.io/port"] == env_of(container)["EDGE_PORT"]
    assert annotations["prometheus.io/path"] in runtime_routes()


def test_service_routes_to_the_named_container_port(deployment: dict[str, Any]) -> None:
    service = one(K8S / "service.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


@pytest.mark.parametrize("path", ["service.yaml", "pdb.yaml"])
def test_selectors_match_the_pod_template(path: str, deployment: dict[str, Any]) -> None:
    doc = one(K8S / path)
    selector = doc["spec"]["selector"]
    selector = selector.get("matchLabels", selector)
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


def test_hpa_scales_the_deployment_on_cpu(deployment: dict[str, Any]) -> None:
    hpa = one(K8S / "hpa.yaml")
    ref = hpa["spec"]["scaleTargetRef"]
    target = ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == target
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request: without one the HPA cannot compute it.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"]


def test_pdb_leaves_room_to_drain(deployment: dict[str, Any]) -> None:
    pdb = one(K8S / "pdb.yaml")
    hpa = one(K8S / "hpa.yaml")
    assert pdb["spec"]["minAvailable"] < min(deployment["spec"]["replicas"], hpa["spec"]["minReplicas"])


@pytest.mark.parametrize("spec", POD_SPECS)
def test_api_keys_come_from_the_documented_secret(spec: dict[str, Any]) -> None:
    secret = one(K8S / "secret.example.yaml")
    (container,) = spec["containers"]
    ref = env_of(container)["EDGE_API_KEYS"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert not ref.get("optional", False), "a missing Secret must stop the pod, not start it unauthenticated"


# -- resources, shutdown, security --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", POD_SPECS)
def test_threads_match_the_cpu_limit(spec: dict[str, Any]) -> None:
    (container,) = spec["containers"]
    env = env_of(container)
    resources = container["resources"]
    limit = cpus(resources["limits"]["cpu"])
    assert cpus(resources["requests"]["cpu"]) == limit, "requests == limits: Guaranteed QoS, steady latency"
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    workers = int(env.get("EDGE_WORKERS", "1"))
    threads = int(env.get("EDGE_INTRA_OP_THREADS", "0"))
    # 0 = the runtime divides the cgroup quota (ceil of the limit) among the workers.
    per_worker = threads or max(1, math.ceil(limit) // workers)
    assert workers * per_worker <= math.ceil(limit), f"{workers} x {per_worker} threads on {limit} CPUs"


@pytest.mark.parametrize("spec", POD_SPECS)
def test_grace_period_outlasts_prestop_and_drain(spec: dict[str, Any]) -> None:
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env_of(container)["EDGE_GRACEFUL_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


@pytest.mark.parametrize("spec", POD_SPECS)
def test_security_context_is_locked_down(spec: dict[str, Any]) -> None:
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["runAsUser"] == dockerfile_uid(REPO / "Dockerfile.cpu")
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]


def test_kserve_predictor_runs_the_image_as_a_v2_custom_container(
    isvc: dict[str, Any], deployment: dict[str, Any]
) -> None:
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert env_of(container)["PROTOCOL"] == "v2"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert predictor["minReplicas"] <= predictor["maxReplicas"]


# -- Dockerfiles --------------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def image_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage(path):
        if word == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def dockerfile_uid(path: Path) -> int:
    (user,) = [args for word, args in final_stage(path) if word == "USER"]
    return int(user.split(":")[0])


DOCKERFILES = [pytest.param(REPO / name, id=name) for name in ("Dockerfile.cpu", "Dockerfile.gpu")]


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_shape(path: Path) -> None:
    ins = instructions(path)
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a final stage"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)
    final = dict(final_stage(path))
    assert json.loads(final["ENTRYPOINT"]) == ["python", "-m", "runtime"]
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert "/health" in final["HEALTHCHECK"] and "urllib" in final["HEALTHCHECK"]
    assert dockerfile_uid(path) != 0
    labels = " ".join(args for word, args in final_stage(path) if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    # The final stage receives a built environment and the models: no source tree, no tests, no training.
    copies = [args for word, args in final_stage(path) if word == "COPY"]
    assert all("--from=builder" in c or c.startswith("models/") for c in copies), copies
    # pip installs the lock with hashes, then a regular wheel of the project without resolving anything more;
    # never editable, never with a cache.
    runs = [args for word, args in instructions(path) if word == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert any("--require-hashes" in p and "--no-deps -r " in p and "requirements/" in p for p in pip), pip
    assert any(p.rstrip().split("&&")[0].rstrip().endswith("--no-deps .") for p in pip), pip
    assert all("--no-cache-dir" in p and "-e " not in p and "--editable" not in p for p in pip)


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_environment_is_valid_settings(path: Path) -> None:
    env = image_env(path)
    edge = {k.removeprefix("EDGE_").lower(): v for k, v in env.items() if k.startswith("EDGE_")}
    assert set(edge) <= set(Settings.model_fields)
    settings = Settings.model_validate(edge)
    assert settings.host == "0.0.0.0" and str(settings.model_dir) == "/app/models"
    expose = [int(args) for word, args in final_stage(path) if word == "EXPOSE"]
    assert expose == [settings.port]
    # `docker stop` sends SIGKILL 10 s after SIGTERM: the default drain must end before that.
    assert settings.graceful_timeout < 10
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"


def test_cpu_and_gpu_images_differ_only_in_the_onnxruntime_flavour() -> None:
    cpu, gpu = image_env(REPO / "Dockerfile.cpu"), image_env(REPO / "Dockerfile.gpu")
    # The GPU image refuses to start without a usable GPU rather than fall back to CPU behind a green /ready.
    assert cpu["EDGE_PROVIDER"] == "cpu" and gpu["EDGE_PROVIDER"] == "cuda"
    # The CPU image's extras are a build argument (`--build-arg EXTRAS=cpu,grpc` adds gRPC); the default is `cpu`.
    cpu_text = (REPO / "Dockerfile.cpu").read_text()
    assert "ARG EXTRAS=cpu\n" in cpu_text and '"requirements/$(echo "${EXTRAS}" | tr , -).txt"' in cpu_text
    assert "-r requirements/gpu.txt" in (REPO / "Dockerfile.gpu").read_text()
    for extras in ("cpu", "cpu-grpc"):
        assert (REPO / "requirements" / f"{extras}.txt").is_file(), f"no lock for EXTRAS={extras.replace('-', ',')}"


def test_build_context_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "exclude everything first, then allow what the images copy"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements", "runtime", "models"}


def test_deployment_image_defaults_match_the_dockerfile(deployment: dict[str, Any]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image = image_env(REPO / "Dockerfile.cpu")
    env = env_of(container)
    for name in ("EDGE_HOST", "EDGE_PORT", "EDGE_MODEL_DIR", "EDGE_PROVIDER"):
        assert env[name] == image[name], name


# -- schema validation (optional) ---------------------------------------------------------------------------


def test_manifests_validate_against_the_kubernetes_schema() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (pip install)")
    for path in MANIFESTS:
        for doc in load(path):
            if doc["kind"] == "InferenceService":
                # No schema ships for KServe's CRD; its predictor is an inline pod spec: check it as a Pod.
                pod_fields = set(kv_pod_fields())
                spec = {k: v for k, v in doc["spec"]["predictor"].items() if k in pod_fields}
                doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}
            kv.validate(doc, KUBERNETES_VERSION, strict=True)


def kv_pod_fields() -> list[str]:
    # KServe's ComponentExtensionSpec fields (replicas, scaling, batching...) sit beside the pod spec fields.
    extension = {
        "minReplicas",
        "maxReplicas",
        "scaleMetric",
        "scaleTarget",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "logger",
        "batcher",
        "labels",
        "annotations",
        "deploymentStrategy",
        "model",
        "autoScaling",
    }
    predictor = one(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]
    return [k for k in predictor if k not in extension]


# -- the GPU variant ----------------------------------------------------------------------------------------


def test_gpu_kustomization_and_selectors_stay_apart_from_the_cpu_ones() -> None:
    kustomization = one(K8S / "gpu" / "kustomization.yaml")
    assert set(kustomization["resources"]) == {p.name for p in (K8S / "gpu").glob("*.yaml")} - {"kustomization.yaml"}
    assert {i["newTag"] for i in kustomization["images"]} == {"0.1.0-gpu"}
    cpu = one(K8S / "deployment.yaml")["spec"]["selector"]["matchLabels"]
    gpu = one(K8S / "gpu" / "deployment.yaml")["spec"]["selector"]["matchLabels"]
    service = one(K8S / "gpu" / "service.yaml")["spec"]["selector"]
    assert service == gpu and gpu != cpu
    assert not (cpu.items() <= gpu.items()), "the CPU Deployment's selector would match the GPU pods"


def test_gpu_deployment_asks_for_a_gpu_and_refuses_to_run_without_one() -> None:
    spec = one(K8S / "gpu" / "deployment.yaml")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    env = env_of(container)
    assert env["EDGE_PROVIDER"] == "cuda" == image_env(REPO / "Dockerfile.gpu")["EDGE_PROVIDER"]
    assert container["image"].endswith("-gpu")
