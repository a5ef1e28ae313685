"""Print what the image installs: pyproject's runtime dependencies, TensorFlow CPU-only.

Read by deploy/Dockerfile inside the build (the base's Python 3.11, standard library only)
and by lock.py on the host, so that the lock and the image agree on the list. ``--build``
prints the build requirements instead (setuptools, and protoc for the schema: setup.py).

``tensorflow-cpu`` is the same release as ``tensorflow`` with the same dependencies, built
without the CUDA kernels the worker never uses (no GPU in the image): for 2.21.0 its wheel
is 274 MB against 572 MB, 1,272 MB installed against 1,872 MB. The project itself is then
installed with ``--no-deps``, so pip does not bring ``tensorflow`` back.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

TENSORFLOW = "tensorflow"
CPU_BUILD = "tensorflow-cpu"


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def image_requirements(pyproject: Path, tensorflow: str = CPU_BUILD) -> list[str]:
    """The runtime dependencies, ``tensorflow`` replaced by the build named (same range)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        if requirement_name(dep) == TENSORFLOW:
            dep = tensorflow + dep.strip()[len(TENSORFLOW) :]
        out.append(dep)
    return out


def build_requirements(pyproject: Path) -> list[str]:
    """What building the project needs (``[build-system] requires``)."""
    return list(tomllib.loads(pyproject.read_text())["build-system"]["requires"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    parser.add_argument(
        "--tensorflow", default=CPU_BUILD, help=f"TensorFlow distribution (default {CPU_BUILD})"
    )
    parser.add_argument("--build", action="store_true", help="the build requirements instead")
    args = parser.parse_args(argv)
    if args.build:
        print("\n".join(build_requirements(args.pyproject)))
    else:
        print("\n".join(image_requirements(args.pyproject, args.tensorflow)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
