"""``evaluate`` on tabular data: a benchmark case by name, and a user's own tabular data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.cli import main
from monitor.tabular_corruptions import TABULAR


def test_an_unknown_case_is_refused_with_the_valid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--case", "iris", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--case: unknown 'iris'; choose from digits, digits_cnn, wine, breast_cancer" in err


def test_a_case_does_not_mix_with_a_users_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--case", "wine", "--detector", str(tmp_path), "--out", str(tmp_path)])
    assert code == 1
    assert "--case builds its own detector and data" in capsys.readouterr().err


def test_evaluate_case_wine_reports_tabular_corruptions_and_the_entropy_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cache = tmp_path / "report", tmp_path / "cache"
    code = main(
        [
            "evaluate", "--case", "wine", "--quick", "--trials", "5", "--no-plots",
            "--out", str(out), "--cache", str(cache),
        ]
    )  # fmt: skip
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "windows of 22 records instead of 200: 72 clean rows" in err
    assert "entropy baseline" in printed and "feature_swap s5" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["case"] == "wine" and report["meta"]["data_kind"] == "tabular"
    assert report["meta"]["window"] == 22
    labels = [c["label"] for c in report["cases"]]
    assert labels == [f"{n} s{s}" for n in TABULAR for s in (3, 5)] + [
        "fgsm eps=0.25",
        "pgd eps=0.25",
    ]
    (seed,) = report["seeds"]
    assert seed["clean"]["n"] == 72 and seed["clean"]["accuracy"] > 0.85
    measurable = [r for r in seed["cases"] if r["measurable"]]
    assert measurable, "no case with enough harmful and harmless rows"
    for row in measurable:
        for source in ("detector", "baseline"):
            assert 0.0 <= row[source]["auc_harmful_vs_harmless"] <= 1.0
    summary = report["summary"]
    assert 0.0 <= summary["baseline_auc_with_attacks"]["mean"] <= 1.0
    assert 0.0 <= summary["tpr_harmful_with_attacks"]["mean"] <= 1.0
    # Tabular data: the lead over the baseline and the window checks, not digits' AUC levels.
    assert [c["name"] for c in report["quality_bar"]] == [
        "AUC above entropy baseline, natural 3+",
        "AUC above entropy baseline, with attacks",
        "windows 30% harmful detected",
        "all-clean windows flagged",
    ]
    info = json.loads((cache / "wine" / "seed-0" / "case.json").read_text())
    assert (info["case"], info["seed"], info["kind"]) == ("wine", 0, "tabular")
    assert (cache / "wine" / "seed-0" / "manifest.json").is_file()


@pytest.fixture(scope="module")
def own_tabular(
    saved_detector_dir: Path,
    tiny_data: tuple[np.ndarray, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own-tabular")
    x, y = tiny_data
    np.savez(root / "clean.npz", X=x[400:], y=y[400:])
    np.save(root / "train.npy", x[:400])
    return {"detector": saved_detector_dir, **{p.stem: p for p in root.iterdir()}}


def test_a_users_tabular_data_get_the_tabular_corruptions_scaled_by_the_training_data(
    own_tabular: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args: list[Any] = [
        "evaluate", "--detector", own_tabular["detector"], "--data", own_tabular["clean"],
        "--train-data", own_tabular["train"], "--seeds", "0", "--severities", "5",
        "--attacks", "fgsm", "--epsilons", "1.5", "--trials", "5", "--no-plots",
        "--out", tmp_path,
    ]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    _, err = capsys.readouterr()
    assert "using the tabular corruptions and attacks" in err and "--train-data" in err
    assert "skipped" not in err
    report = json.loads((tmp_path / "report.json").read_text())
    labels = [c["label"] for c in report["cases"]]
    assert labels == [f"{n} s5" for n in TABULAR] + ["fgsm eps=1.5"]
    rows = {r["corruption"]: r for r in report["seeds"][0]["cases"]}
    clean_accuracy = report["seeds"][0]["clean"]["accuracy"]
    assert rows["fgsm"]["accuracy"] < clean_accuracy  # 1.5 sd per feature hurts
    assert rows["gaussian_noise"]["n_harmful"] > 0
