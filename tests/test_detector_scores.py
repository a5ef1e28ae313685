"""The score formulas, checked against an independent float64 numpy computation."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from monitor.errors import DetectorError, InputValidationError

RTOL, ATOL = 1e-4, 1e-6
TEMPERATURES = [0.1, 0.5, 1.0, 2.0, 5.0]


def reference_scores(y: np.ndarray, y_d: np.ndarray, loss_type: str, temperature: float) -> Any:
    """The issue's definition, written out in float64."""
    y = np.asarray(y, dtype=np.float64)
    y_d = np.asarray(y_d, dtype=np.float64)
    if temperature != 1.0:
        y = y ** (1.0 / temperature)
        y = y / y.sum(axis=1, keepdims=True)
    if loss_type == "kld":
        yc = np.clip(y, 1e-7, 1.0)
        ydc = np.clip(y_d, 1e-7, 1.0)
        return (yc * np.log(yc / ydc)).sum(axis=1)
    p = y_d / y_d.sum(axis=1, keepdims=True)
    p = np.clip(p, 1e-7, 1.0 - 1e-7)
    return -(y * np.log(p)).sum(axis=1)


def probability_rows(n: int, classes: int, seed: int) -> np.ndarray:
    """Softmax-like float32 rows: smooth, peaked, saturated (exact zeros) and one-hot."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * rng.choice([0.5, 3.0, 30.0, 200.0], size=(n, 1))
    logits = logits.astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    rows = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    rows[:3] = np.eye(classes, dtype=np.float32)[:3]
    return rows


@pytest.mark.parametrize("loss_type", ["kld", "xent"])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_instance_scores_match_float64_definition(loss_type: str, temperature: float) -> None:
    from monitor.detector.losses import instance_scores

    y = probability_rows(300, 10, seed=1)
    y_d = probability_rows(300, 10, seed=2)
    y_d[5] = y[5]  # identical rows: kld must be ~0
    assert (y == 0).any() and (y_d == 0).any(), "fixture must contain saturated rows"
    got = instance_scores(y, y_d, loss_type, temperature).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference_scores(y, y_d, loss_type, temperature), RTOL, ATOL)


@pytest.mark.parametrize("loss_type", ["kld", "xent"])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_detector_scores_match_definition_on_saturated_softmax(
    tiny_classifier: Any, tiny_distilled: Any, loss_type: str, temperature: float
) -> None:
    from monitor import ModelDistillation

    det = ModelDistillation(
        threshold=0.1,
        distilled_model=tiny_distilled,
        model=tiny_classifier,
        loss_type=loss_type,
        temperature=temperature,
    )
    x = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32)
    x[:50] *= 1000.0  # drives both softmaxes to exact zeros
    score, y, y_d = det.score(x, batch_size=64, return_predictions=True)
    assert (y[:50] == 0).any() and (y_d[:50] == 0).any()
    assert score.dtype == np.float32 and score.shape == (200,)
    np.testing.assert_allclose(score, reference_scores(y, y_d, loss_type, temperature), RTOL, ATOL)


def test_score_outputs_equals_score_when_given_the_classifier_output(
    fitted_detector: Any, tiny_data: Any
) -> None:
    x = tiny_data[0][:257]
    score, y, y_d = fitted_detector.score(x, return_predictions=True)
    score2, y2, y_d2 = fitted_detector.score_outputs(y, x, return_predictions=True)
    np.testing.assert_allclose(score2, score, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(y_d2, y_d)
    pred = fitted_detector.predict(x)
    pred2 = fitted_detector.predict_outputs(y, x)
    np.testing.assert_array_equal(pred["data"]["is_adversarial"], pred2["data"]["is_adversarial"])


def test_any_batch_size_reuses_one_trace(fitted_detector: Any, tiny_data: Any) -> None:
    x = tiny_data[0]
    full = fitted_detector.score(x)
    for batch_size in (1, 7, 64, 511, 512, 1000):
        np.testing.assert_allclose(
            fitted_detector.score(x, batch_size=batch_size), full, 1e-6, 1e-7
        )
    y = fitted_detector.classifier_outputs(x)
    for n in (1, 3, 300):
        fitted_detector.score_outputs(y[:n], x[:n])
    assert fitted_detector._score_x.experimental_get_tracing_count() == 1
    assert fitted_detector._score_y.experimental_get_tracing_count() == 1


def test_predict_flags_scores_above_threshold(fitted_detector: Any, tiny_data: Any) -> None:
    x = tiny_data[0]
    pred = fitted_detector.predict(x, batch_size=100)
    score = fitted_detector.score(x)
    flags = pred["data"]["is_adversarial"]
    assert flags.shape == (len(x),) and flags.dtype.kind == "i"
    expected = (pred["data"]["instance_score"] > fitted_detector.threshold).astype(int)
    np.testing.assert_array_equal(flags, expected)
    # Different batch sizes may sum in a different order: equal to float32 rounding.
    np.testing.assert_allclose(pred["data"]["instance_score"], score, rtol=1e-5, atol=1e-7)
    assert 0 < flags.sum() < len(x)
    meta = pred["meta"]
    assert meta["name"] == "ModelDistillation"
    assert meta["detector_type"] == "adversarial"
    assert meta["data_type"] == "tabular"
    assert meta["online"] is False
    assert meta["version"]
    no_scores = fitted_detector.predict(x[:5], return_instance_score=False)
    assert no_scores["data"]["instance_score"] is None


def test_infer_threshold_is_the_linear_percentile_plus_margin(
    tiny_classifier: Any, tiny_distilled: Any, tiny_data: Any
) -> None:
    from monitor import ModelDistillation

    det = ModelDistillation(distilled_model=tiny_distilled, model=tiny_classifier)
    x = tiny_data[0]
    scores = det.score(x).astype(np.float64)
    det.infer_threshold(x, threshold_perc=90.0, margin=0.25, batch_size=50)
    assert det.threshold == pytest.approx(np.percentile(scores, 90.0) + 0.25, rel=1e-12)
    assert det.reference_scores == sorted(det.reference_scores)
    assert len(det.reference_scores) == len(x)
    det.infer_threshold(x, reference_size=100)
    assert len(det.reference_scores) == 100
    assert set(det.reference_scores) <= {float(s) for s in scores.astype(np.float32)}


def test_predict_without_threshold_is_a_clear_error(
    tiny_classifier: Any, tiny_distilled: Any, tiny_data: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor import ModelDistillation

    with caplog.at_level(logging.WARNING):
        det = ModelDistillation(distilled_model=tiny_distilled, model=tiny_classifier)
    assert "infer_threshold" in caplog.text
    with pytest.raises(DetectorError, match="no threshold"):
        det.predict(tiny_data[0][:3])


def test_empty_batch_scores_to_empty_arrays(fitted_detector: Any) -> None:
    score, y, y_d = fitted_detector.score(np.empty((0, 8), np.float32), return_predictions=True)
    assert score.shape == (0,) and y.shape == (0, 3) and y_d.shape == (0, 3)


class TestConstruction:
    def test_unsupported_loss_type_fails_at_construction(
        self, tiny_classifier: Any, tiny_distilled: Any
    ) -> None:
        from monitor import ModelDistillation

        with pytest.raises(ValueError, match="loss_type"):
            ModelDistillation(
                distilled_model=tiny_distilled, model=tiny_classifier, loss_type="mse"
            )

    def test_distilled_model_must_be_keras(self, tiny_classifier: Any) -> None:
        from monitor import ModelDistillation

        with pytest.raises(TypeError, match="distilled_model"):
            ModelDistillation(distilled_model=lambda x: x, model=tiny_classifier)

    def test_model_is_required(self, tiny_distilled: Any) -> None:
        from monitor import ModelDistillation

        with pytest.raises(TypeError, match="model"):
            ModelDistillation(distilled_model=tiny_distilled)

    @pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), "hot"])
    def test_temperature_must_be_positive(
        self, tiny_classifier: Any, tiny_distilled: Any, temperature: Any
    ) -> None:
        from monitor import ModelDistillation

        with pytest.raises(ValueError, match="temperature"):
            ModelDistillation(
                distilled_model=tiny_distilled, model=tiny_classifier, temperature=temperature
            )

    def test_distilled_model_with_wrong_class_count_is_refused(self, tiny_classifier: Any) -> None:
        import keras

        from monitor import ModelDistillation

        wrong = keras.Sequential([keras.layers.Dense(5, activation="softmax")])
        with pytest.raises(DetectorError, match="outputs shape"):
            ModelDistillation(distilled_model=wrong, model=tiny_classifier, threshold=1.0)

    def test_distilled_model_without_softmax_is_refused(self, tiny_classifier: Any) -> None:
        import keras

        from monitor import ModelDistillation

        logits = keras.Sequential([keras.layers.Dense(3, bias_initializer="ones")])
        with pytest.raises(DetectorError, match="softmax"):
            ModelDistillation(distilled_model=logits, model=tiny_classifier, threshold=1.0)

    def test_unbuilt_sequential_distilled_model_is_built(self, tiny_classifier: Any) -> None:
        import keras

        from monitor import ModelDistillation

        det = ModelDistillation(
            distilled_model=keras.Sequential([keras.layers.Dense(3, activation="softmax")]),
            model=tiny_classifier,
            threshold=1.0,
        )
        assert det.input_shape == (8,) and det.n_classes == 3
        assert det.score(np.zeros((2, 8), np.float32)).shape == (2,)


class TestInputValidation:
    def test_wrong_instance_shape_names_expected_shape(self, fitted_detector: Any) -> None:
        with pytest.raises(InputValidationError, match=r"shape \(4, 9\), expected \(n, 8\)"):
            fitted_detector.score(np.zeros((4, 9), np.float32))

    def test_non_finite_rows_are_named(self, fitted_detector: Any) -> None:
        x = np.zeros((20, 8), np.float32)
        x[3, 1] = np.nan
        x[17, 0] = np.inf
        with pytest.raises(InputValidationError, match=r"rows 3, 17 hold NaN or Inf"):
            fitted_detector.score(x)

    def test_float64_too_large_for_float32_is_refused(self, fitted_detector: Any) -> None:
        x = np.zeros((3, 8), np.float64)
        x[2, 2] = 1e300
        with pytest.raises(InputValidationError, match="row 2 "):
            fitted_detector.score(x)

    def test_integer_and_float64_inputs_are_cast(self, fitted_detector: Any) -> None:
        x = np.arange(16).reshape(2, 8)
        np.testing.assert_array_equal(
            fitted_detector.score(x), fitted_detector.score(x.astype(np.float32))
        )

    @pytest.mark.parametrize("bad", [np.array([["a"] * 8]), np.array([[None] * 8]), [[1, 2], [3]]])
    def test_non_numeric_input_is_refused(self, fitted_detector: Any, bad: Any) -> None:
        with pytest.raises(InputValidationError):
            fitted_detector.score(bad)

    def test_classifier_output_must_be_probabilities(
        self, fitted_detector: Any, tiny_data: Any
    ) -> None:
        x = tiny_data[0][:6]
        y = fitted_detector.classifier_outputs(x)
        logits = y * 5.0
        with pytest.raises(InputValidationError, match="not probabilities"):
            fitted_detector.score_outputs(logits, x)
        with pytest.raises(InputValidationError, match=r"expected \(6, 3\)"):
            fitted_detector.score_outputs(y[:5], x)
        y_nan = y.copy()
        y_nan[4, 0] = np.nan
        with pytest.raises(InputValidationError, match="row 4 hold NaN"):
            fitted_detector.score_outputs(y_nan, x)


def test_score_classes_agrees_with_score_and_the_top_classes(
    fitted_detector: Any, tiny_data: Any
) -> None:
    """The streaming path (one compiled call per batch) gives the public API's numbers."""
    x = tiny_data[0][:300]
    score, y, y_d = fitted_detector.score(x, return_predictions=True)
    for trusted in (False, True):
        got, top_y, top_d = fitted_detector.score_classes(x, batch_size=128, trusted=trusted)
        np.testing.assert_allclose(got, score, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(top_y, np.argmax(y, axis=1))
        np.testing.assert_array_equal(top_d, np.argmax(y_d, axis=1))
    from_outputs, top_y, _ = fitted_detector.score_classes(x, y, batch_size=1000)
    np.testing.assert_allclose(from_outputs, score, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(top_y, np.argmax(y, axis=1))
    empty = fitted_detector.score_classes(x[:0])
    assert [len(part) for part in empty] == [0, 0, 0]


def test_score_classes_validates_what_it_cannot_trust(fitted_detector: Any, tiny_data: Any) -> None:
    """``trusted`` skips checks only for contiguous arrays of the model's dtype and shape:
    anything else (here float64 with a NaN) is validated as usual."""
    x = tiny_data[0][:10].astype(np.float64)
    x[3, 0] = np.nan
    with pytest.raises(InputValidationError, match="row 3"):
        fitted_detector.score_classes(x, trusted=True)
    with pytest.raises(InputValidationError, match="shape"):
        fitted_detector.score_classes(x[:, :2].astype(np.float32), trusted=True)
