"""fit's averaged distilled models: the average, how members are trained, and that the
score is still the method's distillation loss on the averaged output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _detector(classifier: Any, distilled: Any) -> Any:
    from monitor import ModelDistillation

    return ModelDistillation(
        threshold=1.0, distilled_model=distilled, model=classifier, loss_type="xent"
    )


def test_averaged_model_outputs_the_mean_of_its_members(tiny_data: Any) -> None:
    from fixtures_models import make_tiny_distilled

    from monitor.detector.ensemble import averaged_model

    members = [make_tiny_distilled(seed=s) for s in (1, 2, 3)]
    x = tiny_data[0][:20]
    expected = np.mean([np.asarray(m(x)) for m in members], axis=0)
    merged = averaged_model(members, name="kept")
    assert merged.name == "kept"
    np.testing.assert_allclose(np.asarray(merged(x)), expected, rtol=1e-6)


def test_distil_averages_members_trained_from_different_starts(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    from monitor.detector.architectures import holdout_split
    from monitor.detector.ensemble import distil
    from monitor.detector.losses import instance_scores

    det = _detector(tiny_classifier, fresh_distilled)
    x = tiny_data[0]
    result = distil(det, x, members=2, target=0.6, holdout_fraction=0.25, seed=3)
    _, holdout_rows = holdout_split(len(x), 0.25, 3)
    np.testing.assert_array_equal(result.x_holdout, x[holdout_rows])
    assert len(result.member_epochs) == 2 and result.reached
    members = [layer for layer in det.distilled_model.layers if layer.name.startswith("member_")]
    assert len(members) == 2
    assert det.distilled_model.name == fresh_distilled.name
    outputs = [np.asarray(m(result.x_holdout)) for m in members]
    assert not np.allclose(outputs[0], outputs[1])  # different initialisations
    score, y, y_d = det.score(result.x_holdout, return_predictions=True)
    np.testing.assert_allclose(y_d, np.mean(outputs, axis=0), rtol=1e-5, atol=1e-7)
    # The method's score, unchanged: the distillation loss against the averaged output.
    expected = np.asarray(instance_scores(y, np.mean(outputs, axis=0), "xent", det.temperature))
    np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-6)
    assert result.agreement == pytest.approx(np.mean(y.argmax(1) == y_d.argmax(1)))


def test_one_member_keeps_the_given_distilled_model(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    from monitor.detector.ensemble import distil

    det = _detector(tiny_classifier, fresh_distilled)
    result = distil(det, tiny_data[0], members=1, target=0, max_epochs=2)
    assert det.distilled_model is fresh_distilled
    assert result.member_epochs == [] and result.reached and result.agreement is not None
    with pytest.raises(ValueError, match="at least 1"):
        distil(det, tiny_data[0], members=0)


def test_replacing_the_distilled_model_checks_its_shapes(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    import keras

    from monitor.errors import DetectorError

    det = _detector(tiny_classifier, fresh_distilled)
    x = tiny_data[0][:10]
    before = det.score(x)
    wrong = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(DetectorError, match="outputs shape"):
        det.replace_distilled_model(wrong)
    assert det.distilled_model is fresh_distilled
    np.testing.assert_array_equal(det.score(x), before)
    with pytest.raises(TypeError):
        det.replace_distilled_model("model.keras")


def test_an_averaged_detector_saves_and_loads_with_the_same_scores(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any, tmp_path: Path
) -> None:
    from monitor import load_detector, save_detector
    from monitor.detector.ensemble import distil

    det = _detector(tiny_classifier, fresh_distilled)
    result = distil(det, tiny_data[0], members=2, target=0, max_epochs=2)
    det.infer_threshold(result.x_holdout, threshold_perc=95)
    save_detector(det, tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    x = tiny_data[0][:50]
    np.testing.assert_array_equal(loaded.score(x), det.score(x))
    np.testing.assert_array_equal(loaded.score_classes(x)[2], det.score_classes(x)[2])


def test_default_architecture_takes_a_number_of_hidden_layers() -> None:
    from monitor.detector.architectures import default_distilled_model

    three = default_distilled_model((8,), 3, hidden_units=16, depth=3)
    assert [type(layer).__name__ for layer in three.layers][2:] == ["Dense"] * 4
    assert [layer.units for layer in three.layers[2:5]] == [16, 16, 16]
    with pytest.raises(ValueError, match="depth"):
        default_distilled_model((8,), 3, depth=0)


def _fit_argv(classifier: Any, data: Any, tmp_path: Path, epochs: int) -> list[str]:
    """``fit``'s arguments for the tiny classifier (saved) and 300 of its rows."""
    classifier.save(tmp_path / "classifier.keras")
    np.save(tmp_path / "train.npy", data[0][:300])
    argv = ["fit", "--model", str(tmp_path / "classifier.keras")]
    return [*argv, "--data", str(tmp_path / "train.npy"), "--quiet", "--epochs", str(epochs)]


def test_fit_members_and_hidden_layers_options(
    tiny_classifier: Any, tiny_data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor import load_detector
    from monitor.cli import main

    argv = _fit_argv(tiny_classifier, tiny_data, tmp_path, epochs=2)
    for bad, message in (
        (["--members", "0"], "--members must be at least 1"),
        (["--hidden-layers", "0"], "--hidden-layers must be at least 1"),
        (["--hidden-layers", "2", "--distilled", "arch.keras"], "not with --distilled"),
    ):
        assert main([*argv, *bad, "--out", str(tmp_path / "none")]) != 0
        assert message in capsys.readouterr().err
    options = ["--members", "2", "--hidden-layers", "3", "--agreement", "0.5"]
    assert main([*argv, *options, "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "(2 models averaged, " in out and "epochs each)" in out
    layers = {layer.name: layer for layer in load_detector(tmp_path / "d").distilled_model.layers}
    assert {"member_0", "member_1"} <= set(layers)
    member = [type(layer).__name__ for layer in layers["member_1"].layers]
    assert member == ["InputLayer", "Flatten", "Dense", "Dense", "Dense", "Dense"]


def test_fit_averages_five_models_by_default_and_trains_a_given_one_alone(
    tiny_classifier: Any, tiny_data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor import load_detector
    from monitor.cli import main

    argv = [*_fit_argv(tiny_classifier, tiny_data, tmp_path, epochs=1), "--agreement", "0"]
    assert main([*argv, "--out", str(tmp_path / "default")]) == 0
    names = {layer.name for layer in load_detector(tmp_path / "default").distilled_model.layers}
    assert {f"member_{k}" for k in range(5)} <= names and "member_5" not in names
    member = load_detector(tmp_path / "default").distilled_model.get_layer("member_0")
    assert [type(layer).__name__ for layer in member.layers].count("Dense") == 4  # 3 hidden

    keras_sequential_distilled(tiny_data[0].shape[1:], 3).save(tmp_path / "arch.keras")
    given = [*argv, "--distilled", str(tmp_path / "arch.keras"), "--out", str(tmp_path / "given")]
    assert main(given) == 0
    capsys.readouterr()
    layers = load_detector(tmp_path / "given").distilled_model.layers
    assert not any(layer.name.startswith("member_") for layer in layers)


def keras_sequential_distilled(shape: tuple[int, ...], n_classes: int) -> Any:
    import keras

    return keras.Sequential(
        [keras.Input(shape), keras.layers.Dense(n_classes, activation="softmax")]
    )
