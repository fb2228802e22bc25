"""The trainer's split_by/holdout: validation is exactly the held-out group; resuming keeps it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sound2image.errors import UsageError
from sound2image.training.transformer import TransformerTrainConfig, train_transformer
from tests.transformer.test_training import make_dataset, tiny_run


def test_split_by_label_validates_on_the_held_out_value(tmp_path) -> None:
    make_dataset(tmp_path, count=4)  # tone<i>.wav -> image<i>.png, label "<i>"
    config = dataclasses.replace(tiny_run(tmp_path, tmp_path / "run", max_steps=2), split_by="label",
                                 holdout=["1", "3"])  # fmt: skip
    result = train_transformer(config)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == ["tone1.wav", "tone3.wav"] and split["train"] == ["tone0.wav", "tone2.wav"]
    assert split["settings"]["split_by"] == "label" and split["settings"]["holdout"] == ["1", "3"]
    assert result.val_bpp is not None  # evaluated on the two held-out pairs
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert TransformerTrainConfig.from_dict(saved).holdout == ["1", "3"]


@pytest.mark.parametrize(
    ("settings", "parameter"), [({"split_by": "speaker"}, "holdout"), ({"holdout": ["a"]}, "split_by")]
)
def test_split_by_and_holdout_go_together(settings, parameter) -> None:
    with pytest.raises(UsageError) as error:
        TransformerTrainConfig(data="d", output_dir="o", **settings).check()
    assert error.value.parameters == (parameter,)


def test_an_old_config_without_the_new_fields_loads() -> None:
    record = TransformerTrainConfig(data="d", output_dir="o").to_dict()
    for name in ("split_by", "holdout", "augment"):
        del record[name]
    config = TransformerTrainConfig.from_dict(record)
    assert config.split_by is None and config.holdout == [] and not config.augment.enabled
