"""The evaluation: harmful/harmless groups, metrics, window trials and the evaluate command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.evaluation.harm import CorruptionSpec, build_case, case_metrics, plan, scored
from monitor.evaluation.metrics import (
    average_precision,
    flagged_rate,
    group_stats,
    predictive_entropy,
    roc_auc,
)
from monitor.evaluation.runner import parse_ints
from monitor.evaluation.summary import quality_bar, spread
from monitor.evaluation.windows import (
    contamination_trials,
    draw_trial,
    fixed_reference_rate,
    reference_size_for,
)


def one_hot(classes: list[int], n_classes: int = 3) -> np.ndarray:
    probs = np.full((len(classes), n_classes), 0.05)
    probs[np.arange(len(classes)), classes] = 1.0 - 0.05 * (n_classes - 1)
    return probs


# -- harmful / harmless -------------------------------------------------------------------


@pytest.fixture
def hand_case() -> Any:
    """Six instances; labels, clean and corrupted predictions chosen by hand.

    row: 0 right->right (harmless), 1 right->wrong (harmful), 2 right->right (harmless),
    3 wrong->wrong (neither), 4 right->wrong (harmful), 5 wrong->right (neither).
    """
    y = np.array([0, 1, 2, 0, 1, 2])
    clean = scored(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), one_hot([0, 1, 2, 1, 1, 0]))
    corrupted = scored(np.array([0.2, 0.9, 0.4, 0.8, 0.7, 0.3]), one_hot([0, 0, 2, 2, 2, 2]))
    return build_case(CorruptionSpec("blur", "natural", 3), y, clean, corrupted)


def test_harm_split_of_a_hand_made_case(hand_case: Any) -> None:
    assert hand_case.harmful.tolist() == [False, True, False, False, True, False]
    assert hand_case.harmless.tolist() == [True, False, True, False, False, False]
    assert hand_case.accuracy == pytest.approx(3 / 6)  # rows 0, 2, 5 right when corrupted
    assert hand_case.group("harmful").tolist() == [0.9, 0.7]
    assert hand_case.group("harmless").tolist() == [0.2, 0.4]
    assert hand_case.group("clean").tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert not hand_case.measurable  # fewer than MIN_GROUP in each group


def test_case_metrics_of_a_hand_made_case(hand_case: Any) -> None:
    row = case_metrics(hand_case, threshold=0.45)
    assert (row["n_harmful"], row["n_harmless"]) == (2, 2)
    assert row["detector"]["auc_harmful_vs_harmless"] == pytest.approx(1.0)
    # harmful 0.7, 0.9 vs clean 0.1..0.6: both above every clean score
    assert row["detector"]["auc_harmful_vs_clean"] == pytest.approx(1.0)
    assert row["detector"]["tpr_harmful"] == pytest.approx(1.0)
    assert row["detector"]["fpr_clean"] == pytest.approx(2 / 6)  # 0.5 and 0.6
    assert row["detector"]["fpr_harmless"] == pytest.approx(0.0)
    assert row["scores"]["harmful"] == {
        "n": 2,
        "mean": pytest.approx(0.8),
        "std": pytest.approx(0.1),
    }
    # The one-hot-ish outputs all have the same entropy: the baseline cannot separate.
    assert row["baseline"]["auc_harmful_vs_harmless"] == pytest.approx(0.5)


def test_build_case_refuses_misaligned_sets() -> None:
    clean = scored(np.zeros(3), one_hot([0, 1, 2]))
    corrupted = scored(np.zeros(2), one_hot([0, 1]))
    with pytest.raises(ValueError, match="same number of rows"):
        build_case(CorruptionSpec("x", "user", 0.0), np.array([0, 1, 2]), clean, corrupted)


def test_plan_lists_natural_cases_then_attacks_and_refuses_unknown_names() -> None:
    specs = plan(["blur"], [3, 5], ["fgsm"], [0.1])
    assert [s.label for s in specs] == ["blur s3", "blur s5", "fgsm eps=0.1"]
    with pytest.raises(ValueError, match="unknown corruption"):
        plan(["fog"], [1], [], [])


# -- metrics ------------------------------------------------------------------------------


def test_roc_auc_counts_pairs_and_half_ties() -> None:
    # pairs (pos > neg): 2.5 beats 1 and 2; 4 beats all three -> 5 of 6
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0])) == pytest.approx(5 / 6)
    # 2 vs 1 win, 2 vs 2 tie (half), 3 beats both -> 3.5 of 4
    assert roc_auc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(0.875)


def test_average_precision_by_hand() -> None:
    # ranking 4(+) 3(-) 2.5(+): precision 1 at the first positive, 2/3 at the second
    ap = average_precision(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_metrics_are_none_for_an_empty_group() -> None:
    assert roc_auc(np.array([]), np.array([1.0])) is None
    assert average_precision(np.array([1.0]), np.array([])) is None
    assert flagged_rate(np.array([]), 0.5) is None
    assert group_stats(np.array([])).mean is None


def test_flagged_rate_is_strictly_above_the_threshold() -> None:
    assert flagged_rate(np.array([0.1, 0.5, 0.5, 0.9]), 0.5) == pytest.approx(0.25)


def test_group_stats_use_the_population_std() -> None:
    stats = group_stats(np.array([1.0, 2.0, 3.0, 4.0]))
    assert (stats.n, stats.mean, stats.std) == (4, 2.5, pytest.approx(math.sqrt(1.25)))


def test_predictive_entropy_of_uniform_and_certain_outputs() -> None:
    h = predictive_entropy(np.array([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]]))
    assert h == pytest.approx([math.log(4), 0.0], abs=1e-9)


# -- window trials ------------------------------------------------------------------------


def test_a_trial_reference_shares_no_row_with_its_window() -> None:
    clean = np.arange(400, dtype=np.float64)
    contaminant = np.arange(1000, 1100, dtype=np.float64)
    reference, window = draw_trial(np.random.default_rng(0), clean, contaminant, 0.3, 200, 150)
    assert window.size == 200 and reference.size == 150
    assert int((window >= 1000).sum()) == 60
    assert not set(reference) & set(window)
    assert set(reference) <= set(clean)


def test_reference_size_leaves_room_for_the_window() -> None:
    assert reference_size_for(600, 200, 500) == 400
    with pytest.raises(ValueError, match="too few"):
        reference_size_for(220, 200, 500)


@pytest.fixture(scope="module")
def synthetic_curves() -> dict[str, Any]:
    """Clean scores N(0, 1), harmful N(3, 1), harmless N(0.3, 1)."""
    rng = np.random.default_rng(42)
    clean = rng.normal(0.0, 1.0, 1000)
    pools = {"harmful": rng.normal(3.0, 1.0, 500), "harmless": rng.normal(0.3, 1.0, 500)}
    return {
        kind: contamination_trials(
            clean,
            pool,
            name=kind,
            seed=1,
            p_value=0.01,
            window=200,
            trials=100,
            fractions=(0.0, 0.1, 0.3, 1.0),
        )
        for kind, pool in pools.items()
    }


def test_harmful_contamination_is_detected_and_clean_windows_are_not(
    synthetic_curves: dict[str, Any],
) -> None:
    harmful = synthetic_curves["harmful"]
    assert harmful.rate_at(0.0) <= 0.05
    assert harmful.rate_at(0.3) == 1.0 and harmful.rate_at(1.0) == 1.0
    assert harmful.p_median[1] < harmful.p_median[0]


def test_harmless_contamination_is_flagged_less_than_harmful(
    synthetic_curves: dict[str, Any],
) -> None:
    harmful, harmless = synthetic_curves["harmful"], synthetic_curves["harmless"]
    assert harmless.rate_at(0.1) < harmful.rate_at(0.1)
    assert harmless.rate_at(0.3) < harmful.rate_at(0.3)
    assert harmless.rate_at(1.0) > harmless.rate_at(0.0)  # a shift of 0.3 sd over 200 rows


def test_curves_share_their_all_clean_trials(synthetic_curves: dict[str, Any]) -> None:
    harmful, harmless = synthetic_curves["harmful"], synthetic_curves["harmless"]
    assert harmful.p_median[0] == harmless.p_median[0]
    assert harmful.detected[0] == harmless.detected[0]
    assert not harmful.with_replacement  # 200 of 500 fit without replacement


def test_window_trials_are_reproducible() -> None:
    rng = np.random.default_rng(3)
    clean, pool = rng.normal(size=400), rng.normal(1.0, 1.0, 50)
    kwargs: dict[str, Any] = {"name": "x", "seed": 5, "p_value": 0.05, "trials": 20}
    a = contamination_trials(clean, pool, **kwargs)
    b = contamination_trials(clean, pool, **kwargs)
    assert a == b
    assert a.with_replacement  # 100% of 200 needs more than the 50 in the pool


def test_fixed_reference_flags_clean_windows_only_when_the_reference_differs() -> None:
    rng = np.random.default_rng(7)
    clean = rng.normal(size=600)
    same, shifted = rng.normal(size=300), rng.normal(1.0, 1.0, 300)
    kwargs: dict[str, Any] = {"seed": 0, "p_value": 0.01, "trials": 50}
    assert fixed_reference_rate(same, clean, np.empty(0), 0.0, **kwargs) <= 0.1
    assert fixed_reference_rate(shifted, clean, np.empty(0), 0.0, **kwargs) == 1.0


# -- summary and options ------------------------------------------------------------------


def test_quality_bar_checks_means_against_the_issue_targets() -> None:
    summary = {
        "auc_natural_s3": spread([0.90, 0.88]),
        "auc_with_attacks": spread([0.80, 0.82]),
        "baseline_auc_natural_s3": spread([0.80, 0.86]),
        "baseline_auc_with_attacks": spread([0.70, 0.70]),
        "window_harmful_30": spread([1.0, 0.99]),
        "window_all_clean": spread([0.02, 0.08]),
    }
    checks = {c.name: c for c in quality_bar(summary)}
    assert checks["mean AUC harmful vs harmless, natural severity 3+"].passed
    assert not checks["mean AUC harmful vs harmless, natural 3+ and FGSM/PGD"].passed
    above = checks["AUC above entropy baseline, natural 3+"]
    assert above.value == pytest.approx(0.06) and above.worst == pytest.approx(0.02)
    assert checks["windows 30% harmful detected"].passed
    clean = checks["all-clean windows flagged"]
    assert clean.value == pytest.approx(0.05) and clean.passed  # mean at the limit
    assert clean.worst == pytest.approx(0.08)


def test_integer_lists_accept_ranges_and_lists() -> None:
    assert parse_ints("1-5", "severities") == [1, 2, 3, 4, 5]
    assert parse_ints("3..5,1,3", "severities") == [3, 4, 5, 1]


# -- the command, end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_image_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny digits classifier and detector (seconds), and its clean test data as .npz."""
    import keras

    from monitor import ModelDistillation, save_detector
    from monitor.detector.demo import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split(0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8, 8))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    inputs = keras.Input(shape=(8, 8))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    distilled = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    detector = ModelDistillation(
        threshold=0.0, model=model, distilled_model=distilled, loss_type="xent", temperature=0.5
    )
    detector.fit(x_train[:1000], epochs=5, verbose=False)
    detector.infer_threshold(x_train[1000:], threshold_perc=95.0)
    root = tmp_path_factory.mktemp("evaluation")
    save_detector(detector, root / "detector")
    np.savez(root / "clean.npz", X=x_test, y=y_test)
    rng = np.random.default_rng(0)
    noisy = np.clip(x_test + rng.normal(0, 0.3, x_test.shape), 0, 1).astype(np.float32)
    np.savez(root / "noisy.npz", X=noisy, y=y_test)
    return root / "detector", root


def in_unit(value: Any) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_evaluate_quick_writes_a_complete_report(
    tiny_image_detector: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    detector, root = tiny_image_detector
    out = root / "report"
    code = main(
        [
            "evaluate",
            "--detector",
            str(detector),
            "--data",
            str(root / "clean.npz"),
            "--corrupted",
            str(root / "noisy.npz"),
            "--quick",
            "--trials",
            "20",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "AUC" in printed and "Quality bar" in printed and "window group" in printed

    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"meta", "seeds", "cases", "windows", "summary", "quality_bar"}
    assert report["meta"]["seeds"] == [0]
    labels = [c["label"] for c in report["cases"]]
    assert "gaussian_noise s3" in labels and "pgd eps=0.06" in labels and "noisy" in labels
    assert len(labels) == 5 * 2 + 2 + 1  # quick: severities 3 and 5, one epsilon, the user set

    (seed,) = report["seeds"]
    n = seed["clean"]["n"]
    assert n == 540 and 0.5 < seed["clean"]["accuracy"] <= 1.0
    for row in seed["cases"]:
        assert row["n_harmful"] + row["n_harmless"] <= n
        assert 0.0 <= row["accuracy"] <= 1.0
        assert all(in_unit(v) for v in row["detector"].values())
        assert all(in_unit(v) for v in row["baseline"].values())
        assert row["scores"]["clean"]["n"] == n
    assert any(r["measurable"] for r in seed["cases"])

    pooled = seed["windows"]["natural s3+"]["harmful"]
    assert pooled["fractions"] == [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert pooled["trials"] == 20 and all(in_unit(v) for v in pooled["detected"])
    assert all(0.0 <= p <= 1.0 for p in pooled["p_value_median"])
    assert set(seed["manifest_reference"]) >= {"all_clean", "harmful", "harmless"}

    bar = {c["name"]: c for c in report["quality_bar"]}
    assert len(bar) == 6
    assert all(c["passed"] in (True, False) for c in bar.values())
    assert in_unit(report["summary"]["auc_natural_s3"]["mean"])

    for name in ("score_distributions", "scores_by_severity", "roc_curves", "window_pvalues"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_needs_the_clean_originals_of_a_corrupted_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 8, 8)))
    code = main(["evaluate", "--corrupted", str(tmp_path / "bad.npz"), "--out", str(tmp_path)])
    assert code == 1
    assert "--corrupted needs the clean originals" in capsys.readouterr().err


def test_evaluate_refuses_data_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    np.savez(tmp_path / "clean.npz", X=np.zeros((3, 8, 8)))
    code = main(["evaluate", "--data", str(tmp_path / "clean.npz"), "--out", str(tmp_path)])
    assert code == 1
    assert "no array named y" in capsys.readouterr().err
