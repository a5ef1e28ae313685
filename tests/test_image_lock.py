"""The image's lock: deploy/image/constraints.txt pins everything the Dockerfile installs.

Completeness (every dependency of every pin is pinned too) is proven by the image build
itself, which installs from a wheelhouse holding the pinned wheels only, with no index
(test_container.py). These checks catch a lock that no longer fits pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = ROOT / "deploy" / "image"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


@pytest.fixture(scope="module")
def requirements_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "image_requirements", IMAGE_DIR / "requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (IMAGE_DIR / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in out, f"{name} pinned twice"
        out[name] = match.group(2)
    return out


def test_every_image_requirement_is_pinned_within_its_range(
    requirements_module: ModuleType, pins: dict[str, str]
) -> None:
    wanted = requirements_module.image_requirements(ROOT / "pyproject.toml")
    assert any(r.startswith("tensorflow-cpu") for r in wanted)
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}"


def test_the_image_has_the_cpu_build_of_the_tensorflow_pyproject_names(
    requirements_module: ModuleType, pins: dict[str, str]
) -> None:
    assert "tensorflow" not in pins, "the CUDA build would be installed next to the CPU one"
    wanted = requirements_module.image_requirements(ROOT / "pyproject.toml", "tensorflow")
    [tf] = [Requirement(r) for r in wanted if Requirement(r).name == "tensorflow"]
    assert tf.specifier.contains(pins["tensorflow-cpu"])


def test_the_build_requirements_are_pinned_within_their_range(
    requirements_module: ModuleType, pins: dict[str, str]
) -> None:
    """The project is built inside the image, from the wheelhouse (setup.py runs protoc)."""
    wanted = requirements_module.build_requirements(ROOT / "pyproject.toml")
    assert any(Requirement(r).name == "setuptools" for r in wanted)
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} (build) is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}"


def test_requirement_names_are_normalised(requirements_module: ModuleType) -> None:
    name = requirements_module.requirement_name
    assert name("Prometheus_Client>=0.20") == "prometheus-client"
    assert name("tensorflow>=2.21,<2.22") == "tensorflow"
    with pytest.raises(ValueError):
        name(">=1")
