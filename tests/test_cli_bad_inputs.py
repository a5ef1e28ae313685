"""Every CLI command, given bad inputs, answers with one line and an exit code: never a
traceback. A new command must bring its own bad inputs here (a test checks the table
covers every command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_models import TINY_FEATURES

from monitor.cli import main
from monitor.commands import command_modules

#: argv templates per command; {names} are files made by the ``files`` fixture. Each
#: case must exit 1 (a refused input) or 2 (argparse's usage error).
BAD_INPUTS: dict[str, list[list[str]]] = {
    "run": [
        ["run", "--detector", "{missing}"],
        ["run", "--detector", "{not_detector}"],
        ["run", "--detector", "{detector}", "--config", "{missing}"],
        ["run", "--detector", "{detector}", "--config", "{bad_toml}"],
        ["run", "--detector", "{detector}", "--score-buckets", "1,x"],
        ["run", "--detector", "{detector}", "--max-batch-size", "lots"],
        ["run", "--detector", "{detector}", "--kafka-option", "group.id=other"],
        ["run", "--detector", "{detector}", "--start-from", "yesterday"],
    ],
    "topics": [
        ["topics", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "1"],
        ["topics", "--partitions", "-1"],
        ["topics", "--config", "{bad_toml}"],
    ],
    "alerts": [
        ["alerts", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "1"],
        ["alerts", "--config", "{bad_toml}"],
        ["alerts", "--max", "many"],
    ],
    "fit": [
        ["fit", "--model", "{missing}", "--data", "{train}", "--out", "{new_out}"],
        ["fit", "--model", "{garbage}", "--data", "{train}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{missing}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{garbage}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{strings}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{wrong_width}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{with_nan}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{empty_csv}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{two_rows}", "--out", "{new_out}"],
        ["fit", "--model", "{model}", "--data", "{train}", "--out", "{detector}"],
        ["fit", "--model", "{model}", "--data", "{train}", "--out", "{not_detector}"],
        ["fit", "--model", "{model}", "--data", "{train}", "--out", "{file_out}"],
        [
            "fit",
            "--model",
            "{model}",
            "--data",
            "{npz}",
            "--data-key",
            "nope",
            "--out",
            "{new_out}",
        ],
        [
            "fit",
            "--model",
            "{model}",
            "--data",
            "{train}",
            "--distilled",
            "{garbage}",
            "--out",
            "{new_out}",
        ],
        [
            "fit",
            "--model",
            "{model}",
            "--data",
            "{train}",
            "--distilled",
            "{wrong_classes}",
            "--out",
            "{new_out}",
        ],
        [
            "fit",
            "--model",
            "{model}",
            "--data",
            "{train}",
            "--threshold-data",
            "{wrong_width}",
            "--out",
            "{new_out}",
        ],
        ["fit", "--model", "{model}", "--data", "{train}", "--epochs", "0", "--out", "{new_out}"],
    ],
    "score": [
        ["score", "--detector", "{missing}", "--data", "{train}"],
        ["score", "--detector", "{detector}", "--data", "{wrong_width}"],
        ["score", "--detector", "{detector}", "--data", "{with_nan}"],
        ["score", "--detector", "{detector}", "--data", "{train}", "--output", "{no_dir}/s.csv"],
        ["score", "--detector", "{detector}", "--data", "{train}", "--output", "{tmp}/s.txt"],
    ],
    "evaluate": [
        ["evaluate", "--detector", "{missing}", "--data", "{npz}"],
        ["evaluate", "--detector", "{not_detector}", "--data", "{npz}"],
        ["evaluate", "--detector", "{detector}", "--data", "{train}"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz_no_y}"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz_wrong_width}"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz_bad_labels}"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz}", "--corrupted", "{npz_short}"],
        [
            "evaluate",
            "--detector",
            "{detector}",
            "--data",
            "{npz}",
            "--window",
            "5000",
            "--corrupted",
            "{npz}",
        ],
        [
            "evaluate",
            "--detector",
            "{detector}",
            "--data",
            "{npz}",
            "--attacks",
            "none",
            "--corruptions",
            "none",
        ],
        ["evaluate", "--detector", "{detector}", "--data", "{npz}", "--seeds", "a"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz}", "--epsilons", "0"],
        ["evaluate", "--detector", "{detector}", "--data", "{npz}", "--max-rows", "0"],
        [
            "evaluate",
            "--detector",
            "{detector}",
            "--data",
            "{npz}",
            "--out",
            "{file_out}",
            "--corrupted",
            "{npz}",
        ],
    ],
    "info": [
        ["info", "{missing}"],
        ["info", "{not_detector}"],
        ["info", "{bad_manifest}"],
    ],
    "demo-detector": [
        ["demo-detector", "--out", "{file_out}/inside"],
    ],
    "import-alibi": [
        ["import-alibi", "{missing}", "{new_out}"],
        ["import-alibi", "{not_detector}", "{new_out}"],
    ],
    "produce-demo": [
        ["produce-demo", "--detector", "{detector}", "--count", "0"],
        [
            "produce-demo",
            "--detector",
            "{detector}",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--count",
            "1",
        ],
    ],
    "demo": [
        ["demo", "--duration", "0"],
        ["demo", "--rate", "0", "--duration", "1"],
    ],
}


def _command_names() -> set[str]:
    import argparse

    names: set[str] = set()
    sub = argparse.ArgumentParser().add_subparsers()
    for module in command_modules():
        module.register(sub)
    names.update(sub.choices)
    return names


def test_every_command_has_bad_inputs() -> None:
    missing = sorted(_command_names() - set(BAD_INPUTS))
    assert not missing, f"add bad inputs for {missing} to BAD_INPUTS"


@pytest.fixture(scope="module")
def files(
    tiny_classifier: Any,
    tiny_data: tuple[np.ndarray, np.ndarray],
    saved_detector_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    import keras

    root = tmp_path_factory.mktemp("bad-inputs")
    x, y = tiny_data
    tiny_classifier.save(root / "model.keras")
    np.save(root / "train.npy", x[:300])
    np.save(root / "strings.npy", np.array(["a", "b"]))
    np.save(root / "wrong_width.npy", np.zeros((20, TINY_FEATURES + 3), np.float32))
    with_nan = x[:50].copy()
    with_nan[3, 2] = np.nan
    np.save(root / "with_nan.npy", with_nan)
    np.save(root / "two_rows.npy", x[:2])
    (root / "empty.csv").write_text("")
    (root / "garbage.keras").write_text("not a model\n")
    (root / "bad.toml").write_text("max-batch-size = [\n")
    (root / "file_out").write_text("a file, not a directory\n")
    (root / "not_detector").mkdir()
    (root / "not_detector" / "notes.txt").write_text("hello\n")
    (root / "bad_manifest").mkdir()
    (root / "bad_manifest" / "manifest.json").write_text("{not json")
    np.savez(root / "data.npz", X=x[:120], y=y[:120])
    np.savez(root / "no_y.npz", X=x[:120])
    np.savez(root / "short.npz", X=x[:60], y=y[:60])
    np.savez(root / "wrong_width.npz", X=np.zeros((80, 5), np.float32), y=np.zeros(80, int))
    np.savez(root / "bad_labels.npz", X=x[:120], y=np.full(120, 99))
    wrong = keras.Sequential(
        [keras.Input((TINY_FEATURES,)), keras.layers.Dense(7, activation="softmax")]
    )
    wrong.save(root / "wrong_classes.keras")
    return {
        "tmp": str(root),
        "missing": str(root / "does-not-exist"),
        "detector": str(saved_detector_dir),
        "model": str(root / "model.keras"),
        "garbage": str(root / "garbage.keras"),
        "train": str(root / "train.npy"),
        "strings": str(root / "strings.npy"),
        "wrong_width": str(root / "wrong_width.npy"),
        "with_nan": str(root / "with_nan.npy"),
        "two_rows": str(root / "two_rows.npy"),
        "empty_csv": str(root / "empty.csv"),
        "bad_toml": str(root / "bad.toml"),
        "file_out": str(root / "file_out"),
        "not_detector": str(root / "not_detector"),
        "bad_manifest": str(root / "bad_manifest"),
        "npz": str(root / "data.npz"),
        "npz_no_y": str(root / "no_y.npz"),
        "npz_short": str(root / "short.npz"),
        "npz_wrong_width": str(root / "wrong_width.npz"),
        "npz_bad_labels": str(root / "bad_labels.npz"),
        "wrong_classes": str(root / "wrong_classes.keras"),
        "no_dir": str(root / "no" / "such" / "dir"),
    }


CASES = [(name, argv) for name, cases in BAD_INPUTS.items() for argv in cases]


@pytest.mark.parametrize(
    ("command", "argv"), CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)]
)
def test_bad_input_is_one_line_never_a_traceback(
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    argv: list[str],
) -> None:
    new_out = tmp_path / "new-detector"
    args = [a.format(**files, new_out=new_out) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's usage error
        code = exc.code if isinstance(exc.code, int) else 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert "unexpected error" not in err, f"{args} hit a bug:\n{err}"
    assert code in (1, 2), f"{args} exited {code}:\n{err}"
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"{args}: expected one error line:\n{err}"
    assert not new_out.exists(), "a refused command left a detector behind"


def test_a_bug_is_one_line_too_with_the_traceback_at_debug(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from monitor.commands import info

    def broken(args: Any) -> int:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(info, "run", broken)
    with caplog.at_level("DEBUG", logger="monitor.cli"):
        code = main(["info", "anything"])
    _, err = capsys.readouterr()
    assert code == 70
    assert err.strip() == (
        "distillation-monitor: unexpected error: RuntimeError: something nobody planned for "
        "(a bug; --log-level DEBUG shows where)"
    )
    assert any(r.exc_info for r in caplog.records if r.name == "monitor.cli")
