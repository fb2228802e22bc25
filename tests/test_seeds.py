"""``candidate_seed`` lives in the bottom module ``sound2image.seeds``, shared by both model families."""

from __future__ import annotations

import ast
import inspect

import numpy as np

import sound2image.diffusion.pipeline as pipeline_module
from sound2image import seeds
from sound2image.seeds import candidate_seed
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
