"""serve/: the KServe manifests and the compose file parse, and their ports, probe paths, mount points, image
versions and model names line up with the Dockerfile, the entrypoint and the service's own routes; the
InferenceServices use KServe's current names (deployment mode ``Standard``, the gRPC port ``h2c``, HPA autoscaling
with ``scaleMetric`` and ``scaleTarget``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sk_deploy.bundle import Bundle
from sk_deploy.models import list_models

from .dockerfile import REPO, values

SERVE = REPO / "serve"


def load(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((SERVE / name).read_text()))
    assert isinstance(document, dict)
    return document


def dockerfile_env() -> dict[str, str]:
    return dict(item.split("=", 1) for args in values("ENV") for item in args.split())


def gpu_base_tag() -> str:
    args = dict(a.split("=", 1) for a in values("ARG") if "=" in a)
    return args["GPU_BASE"].rsplit(":", 1)[1]


def test_every_file_in_serve_parses() -> None:
    files = sorted(SERVE.glob("*.yaml"))
    assert [f.name for f in files] == ["compose.yaml", "kserve-sk-deploy.yaml", "kserve-triton.yaml"]
    for path in files:
        assert yaml.safe_load(path.read_text())


DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
HPA_METRICS = ("cpu", "memory")
"""What KServe's HorizontalPodAutoscaler scales on in Standard mode (its webhook refuses any other)."""


def check_standard_and_autoscaled(isvc: dict[str, Any]) -> None:
    """KServe's current deployment mode (``Standard``, formerly ``RawDeployment``) and HPA autoscaling fields."""
    assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE] == "Standard"
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] in HPA_METRICS
    assert isinstance(predictor["scaleTarget"], int) and 1 <= predictor["scaleTarget"] <= 100  # a utilization %
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"]


def serve_options() -> set[str]:
    """The options ``sk-deploy serve`` takes (from the CLI itself)."""
    import typer.main

    from sk_deploy.cli import app

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {option for param in serve.params for option in param.opts}


def service_paths(bundle: Path) -> set[str]:
    """The routes the real app registers (no server started, no model loaded)."""
    from sk_deploy.service.app import ServiceConfig, create_app

    return {getattr(route, "path", "") for route in create_app(ServiceConfig(bundle=bundle)).routes}


def test_kserve_sk_deploy_matches_the_image_and_the_service(small_bundle: Bundle) -> None:
    isvc = load("kserve-sk-deploy.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"] in list_models()  # the served model name is the bundle's model
    check_standard_and_autoscaled(isvc)
    (container,) = isvc["spec"]["predictor"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    port = int(dockerfile_env()["SK_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(p["protocol"] == "TCP" for p in container["ports"])
    # HTTP first (KServe's Service sends port 80 to the first), gRPC named h2c, served by serve --grpc-port
    assert container["ports"][0]["name"] == "http1" and ports == {"http1": port, "h2c": ports["h2c"]} != port
    assert container["name"] == "kserve-container" and container["args"] == ["serve", "--grpc-port",
                                                                             str(ports["h2c"])]
    assert int(env["SK_PORT"]) == port and "--grpc-port" in serve_options()
    assert env["SK_BUNDLE"] == "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
    assert env["STORAGE_URI"].endswith("/" + isvc["metadata"]["name"])
    assert env["SK_PRECISION"] in ("fp32", "fp16", "int8")
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    assert all(probe["port"] == port for probe in probes.values())
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # room for an engine build at first start
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["nvidia.com/gpu"] == "1"
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["SK_WORK_DIR"] == dockerfile_env()["SK_WORK_DIR"]
    assert mount["name"] in {v["name"] for v in isvc["spec"]["predictor"]["volumes"]}
    paths = service_paths(small_bundle.path)
    assert {probe["path"] for probe in probes.values()} <= paths and "/v2/models/{name}/infer" in {
        p.replace(small_bundle.model_name, "{name}") for p in paths}


def test_kserve_triton_matches_the_repository_and_tensorrt_base() -> None:
    isvc = load("kserve-triton.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    check_standard_and_autoscaled(isvc)
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["protocolVersion"] == "v2"
    assert model["storageUri"].endswith("/triton-repo")  # the --out of `sk-deploy triton-repo` in its comment
    assert "sk-deploy triton-repo bundles/sknet50 --out triton-repo" in (SERVE / "kserve-triton.yaml").read_text()
    # plans built in the image's TensorRT base load in the Triton release of the same tag
    assert model["runtimeVersion"] == gpu_base_tag()
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["metadata"]["name"].startswith("sknet50")


def test_compose_matches_the_image() -> None:
    compose = load("compose.yaml")
    server = compose["services"]["sk-deploy"]
    assert (SERVE / server["build"]["context"] / "Dockerfile").is_file()
    assert server["build"]["args"]["VARIANT"] == "gpu"
    port = dockerfile_env()["SK_PORT"]
    assert server["ports"] == [f"{port}:{port}"] and server["environment"]["SK_PORT"] == port
    targets = {volume.removesuffix(":ro").rsplit(":", 1)[1] for volume in server["volumes"]}
    assert targets == {dockerfile_env()["SK_BUNDLE"], dockerfile_env()["SK_WORK_DIR"]}
    assert any(v.endswith(":/models/bundle:ro") for v in server["volumes"])  # the bundle is mounted read-only
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    healthcheck = server["healthcheck"]
    (dockerfile_healthcheck,) = values("HEALTHCHECK")
    assert healthcheck["test"][-1] == "/opt/sk-deploy/healthcheck.py" and healthcheck["test"][-1] in (
        dockerfile_healthcheck)
    triton = compose["services"]["triton"]
    assert triton["image"] == f"nvcr.io/nvidia/tritonserver:{gpu_base_tag()}" and triton["profiles"] == ["triton"]
    assert any(v.endswith(":/models:ro") for v in triton["volumes"]) and "--model-repository=/models" in (
        triton["command"])
    assert "engines" in compose["volumes"]
