"""The container images without a Docker daemon: each image's install step (the folders it copies, its
`pip install`) in a fresh venv, then its ENTRYPOINT + CMD with its ENV, run as the container would.

The coordinator image's command serves on the embedded default (nothing external needed), answers `/readyz`, ships
its migrations (`aidd db sql`, the stock `alembic` with the shipped alembic.ini); the agent image's command
registers with it; both stop cleanly on SIGTERM. Run from `.ci/run` (a minute or two: the whole product installs
from pip's cache), or by hand: `.venv/bin/python scripts/check_images.py`.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402

DEPLOY = ROOT / "deploy"
KEY, TOKEN = "check-images-operator-key", "check-images-agent-token"


class CheckFailed(Exception):
    """One check did not hold; the message says which and why."""


def image_command(text: str) -> list[str]:
    """ENTRYPOINT + CMD (exec form)."""
    parts = [re.search(rf"^{word} (\[.*\])$", text, re.M) for word in ("ENTRYPOINT", "CMD")]
    return [arg for match in parts if match for arg in json.loads(match.group(1))]


def image_env(text: str) -> dict[str, str]:
    """The ENV instructions' variables (KEY=VALUE form, continued lines joined)."""
    joined = text.replace("\\\n", " ")
    return dict(pair.split("=", 1) for line in re.findall(r"^ENV (.*)$", joined, re.M) for pair in line.split())


def install_like(dockerfile: Path, work: Path) -> Path:
    """The image's COPY lines into `work/<image>/src` and its `pip install` into a fresh venv; returns the venv's
    bin."""
    text = dockerfile.read_text()
    image_root = work / dockerfile.stem  # what the image's file system would hold
    for sources, dest in re.findall(r"^COPY (.+) (/src/\S*)$", text, re.M):
        target = image_root / dest.lstrip("/")
        for source in sources.split():
            into = target / Path(source).name if dest.endswith("/") else target
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                                 "build"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, into)
    [package] = re.findall(r"pip install --no-cache-dir (/src\S*)", text)
    env_dir = work / f"venv-{dockerfile.stem}"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    image_root / package.lstrip("/")], check=True, capture_output=True, timeout=900)
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    if check.returncode:
        raise CheckFailed(f"{dockerfile.name}: pip check: {check.stdout.strip()}")
    size = sum(f.stat().st_size for f in env_dir.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"ok   {dockerfile.name}: installed in a fresh venv ({size / 2**20:.0f} MiB), pip check clean")
    return env_dir / "bin"


def get(url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait(what: str, condition: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"{what}: the command exited with {process.returncode}")
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise CheckFailed(f"{what}: not within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], what: str) -> None:
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    if code != 0:
        raise CheckFailed(f"{what}: exited {code} on SIGTERM")
    print(f"ok   {what}: stopped cleanly on SIGTERM")


def run_images(work: Path) -> None:
    coordinator_file, agent_file = DEPLOY / "coordinator.Dockerfile", DEPLOY / "agent.Dockerfile"
    coordinator_bin = install_like(coordinator_file, work)
    agent_bin = install_like(agent_file, work)
    base = {"PATH": f"{coordinator_bin}:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
    ini = subprocess.run(["aidd", "db", "ini"], env=base, capture_output=True, text=True, check=True).stdout.strip()
    for label, command in (("aidd db sql", ["aidd", "db", "sql"]),
                           ("alembic -c <shipped alembic.ini> history", ["alembic", "-c", ini, "history"])):
        done = subprocess.run(command, env=base, capture_output=True, text=True, timeout=120, cwd=work)
        if done.returncode or "0001" not in done.stdout:
            raise CheckFailed(f"{label}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
        print(f"ok   {label}: the migrations ship with the image")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**image_env(coordinator_file.read_text()), **base, "AIDD_HOST": "127.0.0.1", "AIDD_PORT": str(port),
           "AIDD_STATE_DIR": str(work / "state"), "AIDD_API_KEYS": KEY, "AIDD_AGENT_TOKEN": TOKEN}
    command = image_command(coordinator_file.read_text())
    with (work / "coordinator.log").open("wb") as log:
        coordinator = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait("coordinator image: /readyz", lambda: get(f"{url}/readyz")[0] == 200, 180, coordinator)
        print(f"ok   coordinator image: {' '.join(command)} serves, /readyz {get(f'{url}/readyz')[1]}")
        agent_env = {**image_env(agent_file.read_text()), "PATH": f"{agent_bin}:/usr/bin:/bin", "HOME": str(work),
                     "AIDD_URL": url, "AIDD_AGENT_TOKEN": TOKEN, "AIDD_HOSTNAME": "check-images-agent",
                     "AIDD_WORK_DIR": str(work / "agent-work")}
        agent_command = image_command(agent_file.read_text())
        with (work / "agent.log").open("wb") as log:
            agent = subprocess.Popen(agent_command, env=agent_env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        try:
            def registered() -> bool:
                items = get(f"{url}/api/v1/workers")[1].get("items", [])
                return any(w["hostname"] == "check-images-agent" for w in items)
            wait("agent image: registration", registered, 60, agent)
            print(f"ok   agent image: {' '.join(agent_command)} registered with the coordinator")
            stop(agent, "agent image")
        finally:
            if agent.poll() is None:
                agent.kill()
        stop(coordinator, "coordinator image")
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait(30)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="aidd-images-"))
    work.chmod(0o755)  # as root, the embedded PostgreSQL runs as its own user, which must reach the state dir
    try:
        run_images(work)
    except (CheckFailed, subprocess.CalledProcessError) as exc:
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"FAIL {exc} {detail or ''}".strip(), file=sys.stderr)
        for log in sorted(work.glob("*.log")):
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("images: every check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
