"""cluster.yaml against the Ray cluster launcher's own config preparation and JSON schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from orchestray._haproxy import HAPROXY_ENV

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ORCHESTRAY_API_KEYS", "RAY_AUTH_TOKEN")


@pytest.fixture
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def launch_config(config: dict) -> dict:
    """What `ray up` checks before it starts a node: defaults merged in, then the schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_the_aws_config_passes_ray_up_validation(cluster):
    prepared = launch_config(cluster)
    assert prepared["provider"]["type"] == "aws"
    head = prepared["available_node_types"][prepared["head_node_type"]]
    workers = [t for name, t in prepared["available_node_types"].items() if name != prepared["head_node_type"]]
    assert head["max_workers"] == 0 and len(workers) == 1
    # Autoscaling: the worker count may move between a floor and a ceiling.
    assert 0 <= workers[0]["min_workers"] < workers[0]["max_workers"] <= prepared["max_workers"]


def test_validation_would_catch_a_mistake(cluster):
    with pytest.raises(jsonschema.ValidationError):
        launch_config({**cluster, "max_worker": 3})
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["cpu-worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError):
        launch_config(broken)


def test_every_node_installs_orchestray_and_loads_the_secrets_file_before_ray_starts(cluster):
    prepared = launch_config(cluster)
    mounts = prepared["file_mounts"]
    checkout = next(remote for remote, local in mounts.items() if local == ".")
    assert any(checkout in command and "pip install" in command for command in prepared["setup_commands"])
    # Setup commands are merged into both node kinds' setup.
    assert prepared["head_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]
    assert prepared["worker_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]
    secrets = next(remote for remote, local in mounts.items() if local != ".")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in prepared[key] if "ray start" in c)
        assert start.index(f". {secrets}") < start.index("ray start"), key


def test_no_secret_is_written_in_the_file_and_the_secrets_file_lives_outside_the_repository(cluster):
    for text in strings(cluster):
        for name in SECRET_NAMES:
            assert f"{name}=" not in text and f"{name}:" not in text
        assert "sk-" not in text
    local = next(local for local in cluster["file_mounts"].values() if local != ".")
    path = Path(local).expanduser().resolve()
    assert ROOT not in path.parents


def test_the_local_provider_variant_described_in_the_comments_passes_too(cluster):
    local = copy.deepcopy(cluster)
    local["provider"] = {"type": "local", "head_ip": "10.0.0.10", "worker_ips": ["10.0.0.11", "10.0.0.12"]}
    local["auth"] = {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id_ed25519"}
    for field in ("available_node_types", "head_node_type", "max_workers"):
        del local[field]
    prepared = launch_config(local)
    # One node type for head and workers; Ray is started on every listed worker.
    (node_type,) = prepared["available_node_types"].values()
    assert prepared["max_workers"] == 2 and node_type["min_workers"] == node_type["max_workers"] == 2
    assert prepared["head_start_ray_commands"] == cluster["head_start_ray_commands"]


def test_every_node_starts_ray_with_the_haproxy_ingress_unless_the_secrets_file_says_otherwise(cluster, tmp_path):
    """Each start command, run in bash up to `ray start` (a stand-in that prints its environment),
    exports orchestray's HAProxy settings, except one the secrets file sets."""
    secrets = tmp_path / "orchestray.env"
    secrets.write_text("RAY_SERVE_HAPROXY_RETRIES=9\nOPENAI_API_KEY=sk-test\n")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = cluster[key][-1]
        assert start.index(". ~/orchestray.env") < start.index("orchestray._haproxy") < start.index("ray start")
        script = start[:start.index("ray start")].replace("~/orchestray.env", str(secrets)).replace("ulimit -n 65536 &&", "")
        shown = subprocess.run(["bash", "-c", f"{script} {sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"],
                               capture_output=True, text=True, check=True, cwd=ROOT,
                               env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)})
        environ = json.loads(shown.stdout)
        assert {name: environ[name] for name in HAPROXY_ENV} == {**HAPROXY_ENV, "RAY_SERVE_HAPROXY_RETRIES": "9"}, key
        assert environ["OPENAI_API_KEY"] == "sk-test"
