"""The deployment files in `deploy/` as far as this machine can check them without Docker or Kubernetes: the compose
file parses (docker compose when installed) and wires what the README says, the systemd units pass
`systemd-analyze verify` and stop the agent gracefully, the Kubernetes manifests pass the API's JSON schemas
(strict) and probe, limit and grant GPUs as intended, and every image, unit and manifest runs a command that exists."""

from __future__ import annotations

import configparser
import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from coordinator.api.app import ENDPOINTS
from scripts.check_images import image_command

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"
AGENT_STOP_S = 20 + 5
"""The agent's default --grace and --kill-grace: what a unit or pod must give it to hand its tasks back."""
AGENT_SOURCE = (ROOT / "nodeagent" / "cli.py").read_text()


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(kind: str) -> dict[str, Any]:
    [doc] = [d for d in manifests() if d["kind"] == kind]
    return dict(doc["spec"]["template"]["spec"])


def test_images_run_the_two_commands() -> None:
    """The coordinator image serves; the agent image runs the agent (its run from a fresh venv is in
    test_agent_install; the coordinator's in scripts/check_images.py, which CI runs)."""
    assert image_command((DEPLOY / "coordinator.Dockerfile").read_text()) == ["aidd", "--serve"]
    assert image_command((DEPLOY / "agent.Dockerfile").read_text())[0] == "aidd-agent"
    agent_image = (DEPLOY / "agent.Dockerfile").read_text()
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in agent_image


def test_the_coordinator_image_copies_every_package_it_installs() -> None:
    """`pip install /src` in the image builds the whole product: a package pyproject.toml includes but the image
    does not copy installs nothing, and the coordinator fails at import (scripts/check_images.py runs it; this says
    which line is missing in a second)."""
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = set(re.findall(r"^COPY (\S+) /src/\S+$", (DEPLOY / "coordinator.Dockerfile").read_text(), re.M))
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= copied


def test_compose_wires_two_coordinators_an_agent_and_a_migration() -> None:
    """Redis, PostgreSQL and MinIO; the schema migrated once before two coordinators that do not migrate; agents
    that know both; a GPU agent only in the `gpu` profile."""
    services = compose()["services"]
    assert {"redis", "postgres", "minio", "migrate", "coordinator-1", "coordinator-2", "agent"} <= set(services)
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("coordinator-1", "coordinator-2"):
        coordinator = services[name]
        assert coordinator["environment"]["AIDD_MIGRATE_ON_START"] == "false"
        assert coordinator["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert "/readyz" in " ".join(coordinator["healthcheck"]["test"])
    assert services["agent"]["environment"]["AIDD_URL"] == "http://coordinator-1:8333,http://coordinator-2:8333"
    gpu = services["agent-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    for agent in (services["agent"], gpu):
        assert int(agent["stop_grace_period"].rstrip("s")) > AGENT_STOP_S


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")), reason="no docker compose here")
def test_docker_compose_parses_the_file() -> None:
    """`docker compose config` (or docker-compose v1) reads the file as Docker would, with no daemon needed."""
    command = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    done = subprocess.run([*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin", "AIDD_API_KEY": "k",
                                                      "AIDD_AGENT_TOKEN": "t"}, check=False)
    if any(no in done.stderr for no in ("unknown command", "is not a docker command", "unknown shorthand flag")):
        pytest.skip("docker has no compose plugin here")
    assert done.returncode == 0, done.stderr


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser


def test_units_restart_and_let_tasks_be_handed_back() -> None:
    """Both restart on failure; the agent's unit signals the agent alone first (mixed) and waits for its grace."""
    for name in ("aidd-coordinator.service", "aidd-agent.service"):
        service = unit(name)["Service"]
        assert service["Restart"] == "on-failure" and service["KillMode"] == "mixed"
        assert service["StateDirectory"]
    agent = unit("aidd-agent.service")["Service"]
    assert int(agent["TimeoutStopSec"]) > AGENT_STOP_S
    assert "AIDD_WORK_DIR=/var/lib/aidd-agent/work" in agent["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts both units once their ExecStart names installed commands (this venv's)."""
    bin_dir = Path(sys.executable).parent
    paths = []
    for name in ("aidd-coordinator.service", "aidd-agent.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        text = re.sub(r"/opt/aidd(-agent)?/bin/", f"{bin_dir}/", text)
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_manifests_pass_the_kubernetes_schemas() -> None:
    """Every document validates (strict: no unknown field) against the Kubernetes API's JSON schemas; a broken
    probe does not, so the check can fail."""
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Secret", "Deployment", "Service", "DaemonSet"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = {"not": "a path"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_manifests_probe_limit_and_grant_gpus() -> None:
    """The coordinator is probed on routes it serves (liveness and readiness apart), migrates in an init
    container, has requests and a memory limit; the agent DaemonSet gets GPUs, its node's name, the token, and
    time to hand back its tasks; every AIDD_ variable it sets is one the agent reads."""
    served = {e.path for e in ENDPOINTS if e.method == "GET"}
    coordinator = pod_spec("Deployment")
    [container] = coordinator["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/livez", "/readyz"} <= served
    assert coordinator["initContainers"][0]["args"] == ["db", "upgrade"]
    assert {"name": "AIDD_MIGRATE_ON_START", "value": "false"} in container["env"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    agent = pod_spec("DaemonSet")
    [agent_container] = agent["containers"]
    assert int(agent_container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert agent["terminationGracePeriodSeconds"] > AGENT_STOP_S
    env = {e["name"]: e for e in agent_container["env"]}
    assert env["AIDD_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["AIDD_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "aidd"
    assert all(f'"{name}"' in AGENT_SOURCE for name in env if name.startswith("AIDD_"))
