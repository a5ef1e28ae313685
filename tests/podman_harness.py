"""Podman for the container tests: the project's image, and containers that clean up.

Podman runs with deploy/image/containers.conf, as `make image` does. The image comes from
deploy/image/build.py, which installs podman, builds the base and the wheelhouse and
rebuilds the image only when its inputs changed; a build that fails fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "deploy" / "image" / "build.py"
CONTAINERS_CONF = ROOT / "deploy" / "image" / "containers.conf"
BUILD_TIMEOUT_S = 3600  # from a clean machine: debootstrap, wheels, TensorFlow's layer
GRACE_S = 30  # terminationGracePeriodSeconds (k8s) and stop_grace_period (compose)
START_S = 240  # TensorFlow's import and the detector's load, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int, path: str) -> bool:
    """Whether the worker on the host network answers ``path`` with 200."""
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def build_image() -> str:
    """The image for the current sources (built or reused by deploy/image/build.py)."""
    done = subprocess.run(
        [sys.executable, str(BUILD)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"image build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Container:
    name: str

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=check)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self) -> str:
        return podman("inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()

    def stop_with(self, signal: str, timeout: float) -> tuple[int, float]:
        """Send ``signal``, wait up to ``timeout`` s for the exit; (exit code, seconds)."""
        started = time.monotonic()
        podman("kill", "--signal", signal, self.name)
        done = podman("wait", self.name, timeout=timeout, check=False)
        elapsed = time.monotonic() - started
        assert done.returncode == 0, f"podman wait failed: {done.stderr}"
        return int(done.stdout.strip()), elapsed


@contextmanager
def running(image: str, *options: str, command: tuple[str, ...] = ()) -> Iterator[Container]:
    """``podman run -d`` with ``options``; removed afterwards, its logs printed (pytest shows
    them when a test fails)."""
    name = f"dmon-test-{uuid.uuid4().hex[:12]}"
    podman("run", "-d", "--name", name, *options, image, *command)
    container = Container(name)
    try:
        yield container
    finally:
        print(f"--- logs of {name} ---\n{container.logs()[-6000:]}")
        podman("rm", "-f", "-t", "0", name, check=False)
