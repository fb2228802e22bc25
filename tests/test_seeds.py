"""``candidate_seed`` lives in the bottom module ``sound2image.seeds``, shared by both model families."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

import sound2image.diffusion.pipeline as pipeline_module
from sound2image import seeds
from sound2image.errors import UsageError
from sound2image.seeds import candidate_seed, expand_seeds
from sound2image.transformer import reranker


def test_candidate_seed_values() -> None:
    assert candidate_seed(7, 0) == 7  # draw 0 is the plain image of the seed
    # an independent computation of the documented hash: 63 bits from SeedSequence([seed, index])
    high, low = np.random.SeedSequence([9, 2]).generate_state(2, np.uint32)
    assert candidate_seed(9, 2) == (int(high) << 31) | (int(low) >> 1)
    assert 0 <= candidate_seed(-1, 1) < 2**63  # a negative seed wraps like torch's manual_seed range


def test_the_old_import_and_the_diffusion_pipeline_use_the_shared_function() -> None:
    assert reranker.candidate_seed is candidate_seed  # the old name still works
    assert pipeline_module.candidate_seed is candidate_seed
    tree = ast.parse(inspect.getsource(pipeline_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "sound2image.seeds" in imported and "sound2image.transformer.reranker" not in imported


def test_seeds_is_in_the_bottom_layer() -> None:
    import sound2image

    bottom = [line for line in (sound2image.__doc__ or "").splitlines() if line.strip().startswith("7.")]
    assert bottom and "seeds" in bottom[0].split()
    assert "import torch" not in inspect.getsource(seeds)


def test_expand_seeds_keeps_the_order_and_makes_each_seed_once():
    notes: list[str] = []
    assert expand_seeds([5, 20], 2, notes.append) == [5, 6, 20, 21]
    assert notes == []  # no repeats: no note
    assert expand_seeds([1, 2], 2, notes.append) == [1, 2, 3]
    assert expand_seeds([7, 3, 7], 1, notes.append) == [7, 3]
    assert len(notes) == 2 and "note: seed(s) 2 repeat" in notes[0] and "note: seed(s) 7 repeat" in notes[1]
    with pytest.raises(UsageError, match=r"^seed must be an integer in \[0, 9223372036854775807\], got -1$"):
        expand_seeds([-1], 1)
    with pytest.raises(UsageError, match=r"^seed must be an integer in \[0, 9223372036854775806\]"):
        expand_seeds([2**63 - 1], 2)  # seed + 1 would not fit torch's generator
    with pytest.raises(UsageError, match=r"^num_images must be an integer >= 1, got 0$"):
        expand_seeds([1], 0)
    random = expand_seeds(None, 3)  # no seed: one random series of 3 consecutive seeds
    assert random == [random[0], random[0] + 1, random[0] + 2] and 0 <= random[0] < 2**31
