"""The detector commands end to end: fit, score, info, demo-detector, import-alibi."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_models import write_legacy_alibi_dir

from monitor.cli import main


@pytest.fixture(scope="module")
def cli_files(
    tiny_classifier: Any, tiny_data: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    x = tiny_data[0]
    tiny_classifier.save(root / "classifier.keras")
    np.save(root / "train.npy", x[:450])
    np.save(root / "normal.npy", x[450:])
    np.savetxt(root / "train.csv", x[:450], delimiter=",", header=",".join("abcdefgh"))
    return {
        "model": root / "classifier.keras",
        "train": root / "train.npy",
        "normal": root / "normal.npy",
        "csv": root / "train.csv",
    }


@pytest.fixture(scope="module")
def cli_detector(cli_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-fit") / "det"
    code = main(
        [
            "fit",
            "--model",
            str(cli_files["model"]),
            "--data",
            str(cli_files["train"]),
            "--out",
            str(out),
            "--agreement",
            "0.9",
            "--name",
            "cli",
            "--version",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_fast_because_it_never_imports_tensorflow() -> None:
    code = (
        "import sys\n"
        "from monitor.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = {'tensorflow', 'keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` of each command renders: argparse %-formats help text, so a literal %
    in an option's description once made ``run --help`` crash."""
    from monitor.cli import build_parser
    from monitor.config import OPTIONS

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "fit", "score", "demo"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        out = capsys.readouterr().out
        assert out.startswith("usage: distillation-monitor " + name), name
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    run_help = capsys.readouterr().out
    for opt in OPTIONS:
        assert opt.flag in run_help, opt.flag
    percent = next(opt for opt in OPTIONS if "%" in opt.help)
    assert " ".join(percent.help.split()) in " ".join(run_help.split())
    assert "%%" not in run_help  # each literal % is printed once


def test_fit_trains_to_the_agreement_target_and_saves(
    cli_detector: Path, cli_files: dict[str, Path]
) -> None:
    from monitor import load_detector
    from monitor.detector.architectures import holdout_split

    det = load_detector(cli_detector)
    manifest = det.manifest
    assert manifest is not None
    assert (manifest.name, manifest.version) == ("cli", "3")
    assert (manifest.loss_type, manifest.temperature) == ("xent", 0.5)
    x = np.load(cli_files["train"])
    _, holdout_rows = holdout_split(len(x), 0.2, 0)
    scores = np.asarray(det.score(x[holdout_rows]), dtype=np.float64)
    assert det.threshold == pytest.approx(np.percentile(scores, 95.0), rel=1e-6)
    _, y, y_d = det.score(x[holdout_rows], return_predictions=True)
    assert np.mean(y.argmax(1) == y_d.argmax(1)) >= 0.9
    assert len(manifest.reference_scores) == len(holdout_rows)


def test_fit_with_distilled_model_threshold_data_and_csv(
    cli_files: dict[str, Path],
    tmp_path: Path,
    fresh_distilled: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor import load_detector

    fresh_distilled.save(tmp_path / "arch.keras")
    out = tmp_path / "det"
    argv = [
        "fit",
        "--model",
        str(cli_files["model"]),
        "--data",
        str(cli_files["csv"]),
        "--distilled",
        str(tmp_path / "arch.keras"),
        "--loss-type",
        "kld",
        "--temperature",
        "2",
        "--agreement",
        "0",
        "--epochs",
        "3",
        "--threshold-data",
        str(cli_files["normal"]),
        "--threshold-perc",
        "90",
        "--out",
        str(out),
    ]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0, stdout
    det = load_detector(out)
    assert det.distilled_model.name == fresh_distilled.name
    assert (det.loss_type, det.temperature) == ("kld", 2.0)
    normal = np.load(cli_files["normal"])
    expected = np.percentile(np.asarray(det.score(normal), dtype=np.float64), 90.0)
    assert det.threshold == pytest.approx(expected, rel=1e-6)
    assert "threshold" in stdout


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_score_writes_rows_and_a_summary(
    cli_detector: Path,
    cli_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    from monitor import load_detector

    output = tmp_path / f"scores{suffix}"
    argv = ["score", "--detector", str(cli_detector), "--data", str(cli_files["normal"])]
    code, stdout, _ = _run([*argv, "--output", str(output), "--batch-size", "64"], capsys)
    assert code == 0
    det = load_detector(cli_detector)
    x = np.load(cli_files["normal"])
    score, y, y_d = det.score(x, return_predictions=True)
    if suffix == ".csv":
        with output.open() as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == len(x)
    got = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(got, score, rtol=1e-5, atol=1e-7)
    flagged = np.array([int(r["is_adversarial"]) for r in rows])
    assert flagged.sum() == int((got > det.threshold).sum())
    assert [int(r["predicted_class"]) for r in rows] == y.argmax(1).tolist()
    assert [int(r["distilled_class"]) for r in rows] == y_d.argmax(1).tolist()
    assert f"rows {len(x)}  flagged {flagged.sum()}" in stdout
    assert "p99" in stdout


def test_info_prints_the_manifest(cli_detector: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _run(["info", str(cli_detector), "--json"], capsys)
    assert code == 0
    data = json.loads(stdout)
    assert data["name"] == "cli" and data["input_shape"] == [8] and data["n_classes"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "--detector", "{tmp}/nothing", "--data", "{normal}"], "no such detector"),
        (["score", "--detector", "{det}", "--data", "{tmp}/none.npy"], "no such file"),
        (
            ["score", "--detector", "{det}", "--data", "{normal}", "--output", "x.txt"],
            ".csv or .jsonl",
        ),
        (
            ["fit", "--model", "{normal}", "--data", "{normal}", "--out", "{tmp}/o"],
            "cannot load the model",
        ),
        (
            [
                "fit",
                "--model",
                "{model}",
                "--data",
                "{normal}",
                "--out",
                "{tmp}/o",
                "--agreement",
                "2",
            ],
            "--agreement",
        ),
        (["info", "{tmp}"], "manifest.json is missing"),
        (["import-alibi", "{tmp}/none", "{tmp}/o"], "no such directory"),
    ],
    ids=[
        "no-detector",
        "no-data",
        "bad-output",
        "bad-model",
        "bad-agreement",
        "not-detector",
        "no-alibi",
    ],
)
def test_user_errors_are_one_line_and_exit_non_zero(
    cli_detector: Path,
    cli_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    values = {
        "tmp": str(tmp_path),
        "det": str(cli_detector),
        "normal": str(cli_files["normal"]),
        "model": str(cli_files["model"]),
    }
    code, _, stderr = _run([a.format(**values) for a in argv], capsys)
    assert code == 1
    lines = [line for line in stderr.splitlines() if line.startswith("distillation-monitor: error")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in stderr


def test_score_refuses_data_of_the_wrong_shape(
    cli_detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((4, 9), np.float32))
    code, _, stderr = _run(
        ["score", "--detector", str(cli_detector), "--data", str(tmp_path / "wide.npy")], capsys
    )
    assert code == 1 and "the detector expects (8,)" in stderr


def test_import_alibi_converts_and_refuses_malicious_state(
    tiny_classifier: Any,
    tiny_distilled: Any,
    tmp_path: Path,
    cli_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import os
    import pickle

    from monitor.detector.persistence import read_manifest

    src = write_legacy_alibi_dir(tmp_path / "alibi", tiny_classifier, tiny_distilled)
    argv = ["import-alibi", str(src), str(tmp_path / "ours")]
    code, stdout, _ = _run([*argv, "--reference-data", str(cli_files["normal"])], capsys)
    assert code == 0 and "converted" in stdout
    manifest = read_manifest(tmp_path / "ours")
    assert manifest.threshold == pytest.approx(0.375) and len(manifest.reference_scores) == 150

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    (src / "meta.dill").write_bytes(pickle.dumps({"name": "ModelDistillation", "x": Exploit()}))
    code, _, stderr = _run([*argv[:2], str(tmp_path / "again")], capsys)
    assert code == 1 and "refusing to load posix.system" in stderr
    assert not marker.exists() and not (tmp_path / "again").exists()


@pytest.mark.slow
def test_demo_detector_command_is_reproducible(demo_detector_dir: Path, tmp_path: Path) -> None:
    """The real entry point, in a fresh process; same seed, same detector as the fixture."""
    from monitor import load_detector
    from monitor.detector.demo import CLASSIFIER_FILE, load_digits_split

    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "demo-detector", "--out", str(out), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "detector saved to" in result.stdout
    assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower()
    assert (out / CLASSIFIER_FILE).is_file()
    _, _, x_test, y_test = load_digits_split(0)
    a, b = load_detector(out), load_detector(demo_detector_dir)
    np.testing.assert_allclose(a.score(x_test), b.score(x_test), rtol=1e-4, atol=1e-6)
    assert a.threshold == pytest.approx(b.threshold, rel=1e-4)
    assert np.mean(a.classifier_outputs(x_test).argmax(1) == y_test) > 0.93
