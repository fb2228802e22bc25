"""The small CNN judge and AIC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sound2image.errors import UsageError, WeightsError
from sound2image.metrics import ClassifierConfig, ImageClassifier, audio_image_consistency
from sound2image.training.classifier import train_classifier

pytestmark = pytest.mark.numeric


def bars(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Noisy 16×16 images of a horizontal or a vertical bar at a random place."""
    rng = np.random.default_rng(seed)
    images = (rng.random((count, 16, 16)) * 60).astype(np.uint8)
    labels = []
    for index in range(count):
        where = rng.integers(3, 13)
        if index % 2:
            images[index, where - 1 : where + 2, :] = 255
            labels.append("horizontal")
        else:
            images[index, :, where - 1 : where + 2] = 255
            labels.append("vertical")
    return images, labels


@pytest.fixture(scope="module")
def judge() -> ImageClassifier:
    images, labels = bars(128, seed=0)
    return train_classifier(images, labels, ClassifierConfig(epochs=12, batch_size=32, width=8, seed=0))


def test_learns_a_separable_task_and_generalises(judge: ImageClassifier) -> None:
    images, labels = bars(64, seed=1)  # unseen images
    assert judge.config.classes == ["horizontal", "vertical"]
    assert judge.accuracy(images, labels) == 1.0


def test_save_and_load_give_the_same_predictions(judge: ImageClassifier, tmp_path) -> None:
    images, _ = bars(16, seed=2)
    loaded = ImageClassifier.from_pretrained(judge.save_pretrained(tmp_path / "judge"))
    assert loaded.predict(images) == judge.predict(images)
    assert loaded.config.classes == judge.config.classes


def test_missing_or_broken_classifier_directories(tmp_path) -> None:
    with pytest.raises(WeightsError, match="config.json: missing"):
        ImageClassifier.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"config\.json: cannot read"):
        ImageClassifier.from_pretrained(tmp_path)


def test_wrong_image_shape_is_a_usage_error(judge: ImageClassifier) -> None:
    with pytest.raises(UsageError, match=r"\(N, 16, 16\)"):
        judge.predict(np.zeros((2, 32, 32), dtype=np.uint8))


def test_aic_by_hand() -> None:
    assert audio_image_consistency(["1", "2", "3", "3"], ["1", "2", "3", "4"]) == 0.75
    assert audio_image_consistency(["7"], [7]) == 1.0  # labels compared as text
    assert math.isnan(audio_image_consistency([], []))
    with pytest.raises(ValueError):
        audio_image_consistency(["1"], ["1", "2"])
