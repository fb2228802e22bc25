"""Seeds derived from a user's seed, shared by every model family (no torch, nothing from the package).

Best-of-N draws candidate ``k`` of an image seeded ``s`` with :func:`candidate_seed`, in the Image
Transformer (:mod:`sound2image.transformer.reranker`) and in SounDiff
(``SounDiffPipeline(..., candidates=N)``) alike, so draw 0 is the plain image of ``s``.
"""

from __future__ import annotations

import numpy as np


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate ``index`` for an image seeded ``seed``: the seed itself for candidate 0
    (so best-of-1 is plain sampling), else a hash of both that no other (seed, index) shares in
    practice (``seed + index`` would make seed 1's first candidate seed 0's second)."""
    if index == 0:
        return seed
    state = np.random.SeedSequence([seed % 2**63, index]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1
