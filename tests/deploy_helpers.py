"""What the deployment tests share: YAML loading and the worker's view of a DMON_* env."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from monitor.config import KAFKA_ENV_PREFIX, OPTION_BY_NAME, WorkerConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
EXTRA_ENV = {"DMON_CONFIG", "DMON_LOG_LEVEL"}  # read outside OPTIONS (cli.py, load_config)


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return yaml.safe_load(path.read_text())


def make_detector_dir(tmp_path: Path) -> Path:
    """Stands in for the mounted detector: load_config only checks for a manifest."""
    d = tmp_path / "detector"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    return d


def dmon_env_is_known(name: str) -> bool:
    options = {opt.env for opt in OPTION_BY_NAME.values()}
    return name in options or name in EXTRA_ENV or name.startswith(KAFKA_ENV_PREFIX)


def load_env_config(env: Mapping[str, str], detector: Path) -> WorkerConfig:
    """What the worker would build from this environment, with the detector swapped in."""
    dmon = {k: v for k, v in env.items() if k.startswith("DMON_")}
    dmon["DMON_DETECTOR"] = str(detector)
    return load_config(None, environ=dmon)
