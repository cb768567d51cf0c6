"""The KubeRay manifest, serve_config.yaml and what `serve build` makes of the code today agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from orchestray._haproxy import HAPROXY_ENV
from orchestray.config import ProviderConfig, ServeConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())


@pytest.fixture(scope="module")
def serve_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def containers(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_serve_config_v2_is_the_applications_of_serve_config_yaml(manifest, serve_config):
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    assert isinstance(manifest["spec"]["serveConfigV2"], str)  # KubeRay takes it as a YAML string
    deployed = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert deployed == {"applications": serve_config["applications"]}


def test_serve_config_yaml_is_what_serve_build_makes_of_the_code_today(serve_config, tmp_path):
    # The command the README gives; it imports the application without starting Ray.
    serve = Path(sys.executable).with_name("serve")
    out = tmp_path / "serve_config.yaml"
    subprocess.run([str(serve), "build", "serve_app:app", "-o", str(out)], cwd=ROOT, capture_output=True, timeout=120, check=True)
    fresh = yaml.safe_load(out.read_text())
    assert fresh["applications"] == serve_config["applications"], (
        "serve_config.yaml is stale: run `serve build serve_app:app -o serve_config.yaml` and copy its "
        "applications into k8s/rayservice.yaml's serveConfigV2"
    )


def test_every_ray_container_takes_the_keys_from_a_secret_and_none_is_written_down(manifest):
    needed = {ServeConfig().api_keys_env} | {
        ProviderConfig(name="p", kind=kind).api_key_env for kind in ("openai", "anthropic")
    }
    for container in containers(manifest):
        env = {item["name"]: item for item in container.get("env", [])}
        assert needed <= set(env), container["name"]
        for name in needed:
            assert "value" not in env[name], f"{name} is written into the manifest"
            assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
        # Without gateway keys the HTTP API would be open to anyone who reaches it: the pod must
        # not start with the Secret missing. Provider keys are needed only by providers in use.
        assert not env[ServeConfig().api_keys_env]["valueFrom"]["secretKeyRef"].get("optional", False)


def test_one_image_and_one_ray_version_everywhere(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    images = {c["image"] for c in containers(manifest)}
    assert len(images) == 1
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["minReplicas"] < group["maxReplicas"]
    version = cluster["rayVersion"]
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    launcher_image = yaml.safe_load((ROOT / "cluster.yaml").read_text())["docker"]["image"]
    generated_by = re.search(r"on Ray v(\S+?)\.$", (ROOT / "serve_config.yaml").read_text(), re.MULTILINE).group(1)
    # The client (this environment), the images and the generated config all run one Ray release.
    assert version == ray.__version__ == generated_by
    assert base.startswith(f"rayproject/ray:{version}-py311") and launcher_image.startswith(f"rayproject/ray:{version}-py311")


def test_every_ray_container_serves_http_through_haproxy(manifest):
    for container in containers(manifest):
        env = {item["name"]: item for item in container.get("env", [])}
        # orchestray's HAProxy settings, as serve_app and cluster.yaml give them (orchestray/_haproxy.py)
        assert {name: env[name]["value"] for name in HAPROXY_ENV} == HAPROXY_ENV, container["name"]
