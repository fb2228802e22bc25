"""Image feature extractors for FID / KID: the Inception weights errors, encoder and classifier features."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sound2image.errors import UsageError, WeightsError
from sound2image.metrics import (
    INCEPTION_WEIGHTS,
    ClassifierConfig,
    ImageClassifier,
    ImageFeatures,
    SmallCNN,
    classifier_features,
    encoder_features,
    inception_features,
)

OFFLINE = "features=clip or features=classifier:DIR work offline"


@pytest.fixture
def fake_fidelity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An importable (empty) torch_fidelity and an empty torch home: only the weights are missing."""
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def tiny_classifier(size: int = 16, width: int = 4) -> ImageClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(classes=["a", "b", "c"], image_size=size, width=width)
    return ImageClassifier(SmallCNN(3, width), config)


def test_inception_without_torch_fidelity_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails, as where it is not installed
    with pytest.raises(WeightsError) as caught:
        inception_features()
    message = str(caught.value)
    assert "\n" not in message
    assert "pip install torch-fidelity" in message and message.endswith(OFFLINE)
    assert caught.value.parameters == ("features",)


def test_inception_without_weights_says_where_to_put_them(fake_fidelity: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        inception_features()
    message = str(caught.value)
    assert "\n" not in message
    assert f"put {INCEPTION_WEIGHTS} in {fake_fidelity} (offline)" in message
    assert INCEPTION_WEIGHTS == "pt_inception-2015-12-05-6726825d.pth"
    assert "weights=FILE" in message and message.endswith(OFFLINE)
    assert caught.value.parameters == ("weights", "features")


def test_inception_with_a_missing_or_broken_weights_file(fake_fidelity: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match=rf"^{missing}: Inception-v3 checkpoint not found .*{OFFLINE}$"):
        inception_features(str(missing))
    fake_fidelity.mkdir(parents=True)
    (fake_fidelity / INCEPTION_WEIGHTS).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=rf"^{fake_fidelity / INCEPTION_WEIGHTS}: cannot load"):
        inception_features()


def test_encoder_features_wrap_an_encoder_as_float64() -> None:
    def mean_colour(images):
        return torch.from_numpy(
            np.stack([np.asarray(i.convert("RGB"), np.float32).mean(axis=(0, 1)) for i in images])
        )

    features = encoder_features(mean_colour, "clip", 3)
    assert isinstance(features, ImageFeatures) and (features.name, features.num_features) == ("clip", 3)
    out = features([Image.new("RGB", (4, 4), (10, 20, 30)), Image.new("L", (2, 2), 7)])
    assert out.dtype == torch.float64 and out.tolist() == [[10.0, 20.0, 30.0], [7.0, 7.0, 7.0]]
    assert features([]).shape == (0, 3)
    with pytest.raises(UsageError, match=r"^clip features: expected shape \(1, 4\), got \(1, 3\)$"):
        encoder_features(mean_colour, "clip", 4)([Image.new("RGB", (4, 4))])
    with pytest.raises(UsageError, match="num_features must be an integer >= 1"):
        encoder_features(mean_colour, "clip", 0)


def test_smallcnn_keeps_its_saved_keys_and_its_outputs() -> None:
    """``features`` is still the stages' module (state-dict keys as saved before) and the logits are what the
    old forward computed: stages, mean pooling with keepdim, then the head."""
    model = SmallCNN(3, width=4).eval()
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert keys == [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.1.0.weight",
        "features.1.1.weight",
        "features.2.0.weight",
        "features.2.1.weight",
        "head.2.weight",
    ]
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = model.features[2](model.features[1](model.features[0](x)))
        assert torch.equal(model(x), model.head(maps.mean(dim=(2, 3), keepdim=True)))
        assert torch.equal(model.features(x), maps.mean(dim=(2, 3)))


@pytest.mark.numeric
def test_classifier_features_are_what_the_head_reads() -> None:
    """logits = features · Wᵀ + b (eval mode: dropout is the identity); float32 sums of 16 products:
    1e-5 absolute."""
    judge = tiny_classifier()
    images = np.random.default_rng(2).integers(0, 256, (6, 16, 16), dtype=np.uint8)
    linear = judge.model.head[-1]
    expected = judge.features(images) @ linear.weight.detach().T + linear.bias.detach()
    assert torch.allclose(judge.logits(images), expected, atol=1e-5)
    assert judge.logits(images).argmax(dim=1).tolist() == judge.predict_indices(images)
    assert judge.features(images).shape == (6, 16) and judge.logits(images[:0]).shape == (0, 3)
    with pytest.raises(UsageError, match=r"classifier expects \(N, 16, 16\) images"):
        judge.features(images[:, :8, :8])


def test_classifier_features_prepare_images_as_the_classifier_was_trained() -> None:
    """Grayscale, and a smaller image centred on a black canvas of the classifier's size (as
    ``prepare_image`` does for 28×28 digits): the features of an 8×8 image are those of the padded array."""
    judge = tiny_classifier()
    features = classifier_features(judge, "classifier:judge")
    assert (features.name, features.num_features) == ("classifier:judge", 16)
    small = np.random.default_rng(3).integers(0, 256, (8, 8), dtype=np.uint8)
    canvas = np.zeros((16, 16), dtype=np.uint8)
    canvas[4:12, 4:12] = small
    grey = np.full((16, 16), 200, dtype=np.uint8)
    out = features([Image.fromarray(small, "L"), Image.new("RGB", (16, 16), (200, 200, 200))])
    assert out.dtype == torch.float64
    assert torch.equal(out, judge.features(np.stack([canvas, grey])).double())


def test_inception_feeds_rgb_uint8_batches_of_one_size_in_order(
    fake_fidelity: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchmetrics' extractor replaced by a recorder (its real weights need network access): every image
    reaches it as (B, 3, H, W) uint8 RGB with one size per batch, the weights file found in the torch home
    is the one passed, and the rows come back in the caller's order as float64 (2048 features)."""
    import torchmetrics.image.fid as fid

    seen: dict[str, object] = {"shapes": []}

    class Recorder(torch.nn.Module):
        def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str) -> None:
            super().__init__()
            seen.update(name=name, features=features_list, path=feature_extractor_weights_path)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            seen["shapes"].append(tuple(x.shape))
            out = torch.zeros((x.shape[0], 2048))
            out[:, :3] = x.float().mean(dim=(2, 3))  # the mean colour, to check the order
            return out

    monkeypatch.setattr(fid, "NoTrainInceptionV3", Recorder)
    fake_fidelity.mkdir(parents=True)
    (fake_fidelity / INCEPTION_WEIGHTS).write_bytes(b"weights")
    features = inception_features(batch_size=2)
    assert (features.name, features.num_features) == ("inception", 2048)
    assert seen["path"] == str(fake_fidelity / INCEPTION_WEIGHTS) and seen["features"] == ["2048"]
    images = [
        Image.new("RGB", (8, 8), (10, 20, 30)),
        Image.new("L", (4, 4), 50),
        Image.new("RGB", (8, 8), (1, 2, 3)),
        Image.new("RGBA", (8, 8), (7, 8, 9, 0)),
    ]
    out = features(images)
    assert out.dtype == torch.float64 and out.shape == (4, 2048)
    assert out[:, :3].tolist() == [[10, 20, 30], [50, 50, 50], [1, 2, 3], [7, 8, 9]]
    assert sorted(seen["shapes"]) == [(1, 3, 4, 4), (1, 3, 8, 8), (2, 3, 8, 8)]
