"""``fit`` and ``evaluate`` on the small data sets users start with: warnings, refusals
and adaptations instead of silent trouble or tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.cli import main
from monitor.detector.fit_checks import check_rows, threshold_warning
from monitor.errors import ConfigError


def test_threshold_warning_names_the_scores_behind_it() -> None:
    text = threshold_warning(25, 95.0)
    assert text is not None and "only 25 clean scores" in text and "200 scores" in text
    assert threshold_warning(200, 95.0) is None
    assert threshold_warning(999, 99.0) is not None and threshold_warning(1000, 99.0) is None
    assert threshold_warning(5, 100.0) is None  # the maximum, chosen on purpose


def test_check_rows_says_how_many_are_needed() -> None:
    check_rows(46, 0.2)
    with pytest.raises(ConfigError, match=r"has 45 rows; .* fit needs at least 46"):
        check_rows(45, 0.2)
    with pytest.raises(ConfigError, match="fit needs at least 20"):
        check_rows(19, 0.5)


@pytest.fixture(scope="module")
def small(
    tiny_classifier: Any,
    tiny_data: tuple[np.ndarray, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("small")
    x, y = tiny_data
    tiny_classifier.save(root / "model.keras")
    np.save(root / "train.npy", x[:125])
    np.savez(root / "test54.npz", X=x[300:354], y=y[300:354])
    np.savez(root / "test120.npz", X=x[300:420], y=y[300:420])
    rng = np.random.default_rng(0)
    noisy = x[300:420] + rng.normal(0, 3.0, x[300:420].shape).astype(np.float32)
    np.savez(root / "noisy120.npz", X=noisy, y=y[300:420])
    np.savez(root / "noisy54.npz", X=noisy[:54], y=y[300:354])
    return {p.stem: p for p in root.iterdir()}


def _fit(small: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "fit", "--model", str(small["model"]), "--data", str(small["train"]),
        "--out", str(out), "--agreement", "0", "--epochs", "3", "--quiet", *extra,
    ]  # fmt: skip


def test_fit_warns_on_few_scores_and_refuses_to_overwrite_without_force(
    small: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "det"
    assert main(_fit(small, out)) == 0
    printed, err = capsys.readouterr()
    assert "only 25 clean scores" in err and err.startswith("warning:"), err
    assert "manifest hash " in printed
    first = json.loads((out / "manifest.json").read_text())

    assert main(_fit(small, out, "--name", "second")) == 1
    _, err = capsys.readouterr()
    assert "already holds a detector" in err and "--force" in err
    assert json.loads((out / "manifest.json").read_text()) == first

    assert main(_fit(small, out, "--name", "second", "--force")) == 0
    capsys.readouterr()
    assert json.loads((out / "manifest.json").read_text())["name"] == "second"


@pytest.fixture(scope="module")
def small_detector(small: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small-det") / "det"
    assert main(_fit(small, out)) == 0
    return out


@pytest.mark.parametrize(
    ("rows", "note"),
    [
        (54, "window drift test skipped: it needs at least 60 clean rows"),
        (120, "windows of 70 records instead of 200"),
    ],
)
def test_evaluate_adapts_its_windows_to_the_clean_rows(
    small: dict[str, Path],
    small_detector: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: int,
    note: str,
) -> None:
    code = main(
        [
            "evaluate", "--detector", str(small_detector),
            "--data", str(small[f"test{rows}"]), "--corrupted", str(small[f"noisy{rows}"]),
            "--corruptions", "none", "--attacks", "none",  # only the user's set
            "--seeds", "0", "--trials", "20", "--no-plots", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert note in err
    assert "AUC harmful vs harmless, your corrupted set" in out
    assert "Quality bar" not in out and "n/a" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert bool(report["windows"]) == (rows == 120)


def test_evaluate_explains_a_window_too_large_for_the_data(
    small: dict[str, Path], small_detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate", "--detector", str(small_detector), "--data", str(small["test120"]),
            "--corrupted", str(small["noisy120"]), "--window", "100", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 1
    assert "--window 100 needs 150 clean rows" in err and "use --window 70 or less" in err
