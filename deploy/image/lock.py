"""Write deploy/image/constraints.txt: every package the image installs, pinned.

The image installs open version ranges (pyproject.toml); the constraints file pins the
whole tree to the versions the test suite runs with, so that two builds of the same commit
install the same packages, offline or not. pip resolves the image's requirements
(requirements.py) plus what building the project needs (``[build-system]``), preferring the versions
installed in this virtualenv (``pip freeze``; ``tensorflow-cpu`` takes ``tensorflow``'s),
and the result is written sorted, one ``name==version`` a line:

    .venv/bin/python deploy/image/lock.py     # after changing pyproject.toml's dependencies

pip asks the package index for metadata only (no wheel is downloaded).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from requirements import (
    CPU_BUILD,
    TENSORFLOW,
    build_requirements,
    image_requirements,
    requirement_name,
)

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "deploy" / "image" / "constraints.txt"
HEADER = (
    "# Every package deploy/Dockerfile installs, pinned to the versions the tests run with.\n"
    "# Written by deploy/image/lock.py; do not edit by hand.\n"
)


def installed_pins() -> list[str]:
    """This virtualenv's versions, TensorFlow's also as the CPU build's."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = [line for line in frozen if "==" in line and not line.startswith("#")]
    for line in list(pins):
        name, _, version = line.partition("==")
        if requirement_name(name) == TENSORFLOW:
            pins.append(f"{CPU_BUILD}=={version}")
    return pins


def resolve(requirements: list[str], preferred: list[str]) -> dict[str, str]:
    """name -> version, as pip would install ``requirements`` into an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        req, pref, report = (Path(tmp) / n for n in ("req.txt", "pref.txt", "report.json"))
        req.write_text("\n".join(requirements) + "\n")
        pref.write_text("\n".join(preferred) + "\n")
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet", "--dry-run"),
                *("--ignore-installed", "--only-binary", ":all:", "--report", str(report)),
                *("-r", str(req), "-c", str(pref)),
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    return {requirement_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main() -> int:
    pyproject = ROOT / "pyproject.toml"
    requirements = image_requirements(pyproject) + build_requirements(pyproject)
    CONSTRAINTS.write_text(render(resolve(requirements, installed_pins())))
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
