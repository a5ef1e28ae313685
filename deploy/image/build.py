"""Build the worker's image with podman, offline, on a machine with no Docker engine.

    .venv/bin/python deploy/image/build.py            # = make image: every step below
    .venv/bin/python deploy/image/build.py wheelhouse  # only download the wheels

Each step is skipped when its result is already there and its inputs have not changed, so
a second run costs a few seconds:

1. tools: podman, runc and debootstrap from Debian (apt-get, as root) when missing.
2. base: a Debian bookworm root file system with Python 3.11 made by debootstrap, imported
   as ``localhost/distillation-monitor-base:bookworm`` (no registry needed).
3. wheelhouse: every wheel deploy/image/constraints.txt pins, downloaded by pip into
   deploy/image/wheelhouse/ (the build cannot reach the package index).
4. image: ``podman build`` of deploy/Dockerfile on that base from the wheelhouse alone,
   tagged ``localhost/distillation-monitor:local`` and labelled with a digest of
   everything that goes into it; an image with the same digest is not rebuilt.

Podman runs with deploy/image/containers.conf (runc, cgroupfs, no default ulimits).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "image"
CONTAINERS_CONF = HERE / "containers.conf"
CONSTRAINTS = HERE / "constraints.txt"
WHEELHOUSE = HERE / "wheelhouse"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IMAGE = "localhost/distillation-monitor:local"
BASE = "localhost/distillation-monitor-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3,python3-venv"
INPUTS_LABEL = "io.distillation-monitor.inputs"
GENERATED = {".pyc", ".binpb"}  # written by builds (setup.py compiles the .proto), not inputs
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
# What a base image needs to be a base, not what debootstrap leaves for a running system.
BASE_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "var/cache/apt",
    "var/lib/apt/lists",
)


def log(message: str) -> None:
    print(f"image: {message}", flush=True)


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, capture: bool = True, check: bool = True) -> str:
    """Run podman with the project's containers.conf; its stdout if captured."""
    done = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        check=False,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:]
        raise SystemExit(f"podman {' '.join(args[:2])} failed ({done.returncode}): {detail}")
    return (done.stdout or "").strip()


def ensure_tools() -> None:
    missing = [package for command, package in TOOLS.items() if not shutil.which(command)]
    if not missing:
        return
    log(f"installing {', '.join(missing)} (Debian packages)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def image_exists(name: str) -> bool:
    done = subprocess.run(["podman", "image", "exists", name], env=podman_env(), check=False)
    return done.returncode == 0


def ensure_base(rebuild: bool = False) -> None:
    """Debian bookworm + Python 3.11 from Debian's packages, as a local image."""
    if image_exists(BASE) and not rebuild:
        return
    log(f"building {BASE} with debootstrap (a few minutes)")
    started = time.monotonic()
    work = ROOT / ".local" / "image"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                *("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}"),
                *("bookworm", str(rootfs), DEBIAN_MIRROR),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for part in BASE_TRIM:
            shutil.rmtree(rootfs / part, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "--change", 'CMD ["python3"]', "-", BASE],
            stdin=tar.stdout,
            env=podman_env(),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise SystemExit("could not import the debootstrap root file system")
    log(f"{BASE} built in {time.monotonic() - started:.0f} s")


def pinned() -> set[tuple[str, str]]:
    """(normalised name, version) of every pin."""
    pins = set()
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins.add((re.sub(r"[-_.]+", "-", name).lower(), version))
    return pins


def wheel_pin(path: Path) -> tuple[str, str]:
    """(normalised name, version) from a wheel's file name (PEP 427)."""
    name, version = path.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def ensure_wheelhouse() -> None:
    """Every pinned wheel in the wheelhouse, and nothing else (a stamp records which).

    pip keeps the wheels it finds already downloaded; wheels of old pins are removed."""
    stamp = WHEELHOUSE / ".constraints.sha256"
    digest = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    log("downloading the pinned wheels into deploy/image/wheelhouse")
    stamp.unlink(missing_ok=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--only-binary", ":all:", "--dest", str(WHEELHOUSE), "-r", str(CONSTRAINTS)),
        ],
        check=True,
    )
    pins = pinned()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if wheel_pin(wheel) not in pins:
            wheel.unlink()
    have = {wheel_pin(w) for w in WHEELHOUSE.glob("*.whl")}
    if have != pins:
        raise SystemExit(f"no wheel for {sorted(pins - have)} in {WHEELHOUSE}")
    stamp.write_text(digest)


def build_inputs() -> Iterable[Path]:
    """Every file the build reads (the wheelhouse is covered by the constraints)."""
    yield DOCKERFILE
    yield ROOT / ".dockerignore"
    yield ROOT / "pyproject.toml"
    yield ROOT / "setup.py"
    yield ROOT / "README.md"
    yield HERE / "requirements.py"
    yield CONSTRAINTS
    yield from sorted(
        p
        for p in (ROOT / "monitor").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in GENERATED
    )


def inputs_digest() -> str:
    h = hashlib.sha256(podman("image", "inspect", "--format", "{{.Id}}", BASE).encode())
    for path in build_inputs():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def ensure_image(rebuild: bool = False) -> str:
    """The image for the current inputs; built only if no image has their digest."""
    digest = inputs_digest()
    previous = (
        podman("image", "inspect", "--format", "{{.Id}}", IMAGE) if image_exists(IMAGE) else ""
    )
    if previous and not rebuild:
        label = podman(
            "image", "inspect", "--format", f'{{{{index .Labels "{INPUTS_LABEL}"}}}}', IMAGE
        )
        if label == digest:
            log(f"{IMAGE} is up to date")
            return IMAGE
    log(f"building {IMAGE}")
    started = time.monotonic()
    podman(
        *("build", "--format", "docker", "--network", "host", "--layers"),
        *("--build-arg", f"PYTHON_IMAGE={BASE}", "--build-arg", "PIP_NO_INDEX=1"),
        *("--label", f"{INPUTS_LABEL}={digest}", "-f", str(DOCKERFILE), "-t", IMAGE, str(ROOT)),
        capture=False,
    )
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", IMAGE):
        # The replaced image's own layers (the project's, a few MB, or a whole runtime stage
        # when dependencies changed); the shared and cached layers stay.
        podman("rmi", previous, check=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE))
    log(f"{IMAGE} built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=["image", "wheelhouse", "base"], default="image")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    if args.step == "wheelhouse":
        ensure_wheelhouse()
        return 0
    ensure_tools()
    ensure_base(rebuild=args.rebuild and args.step == "base")
    if args.step == "image":
        ensure_wheelhouse()
        print(ensure_image(rebuild=args.rebuild))
    return 0


if __name__ == "__main__":
    sys.exit(main())
