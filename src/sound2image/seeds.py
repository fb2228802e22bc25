"""Seeds derived from a user's seed, shared by every model family (no torch).

Best-of-N draws candidate ``k`` of an image seeded ``s`` with :func:`candidate_seed`, in the Image
Transformer (:mod:`sound2image.transformer.reranker`) and in SounDiff
(``SounDiffPipeline(..., candidates=N)``) alike, so draw 0 is the plain image of ``s``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import numpy as np

#: Largest seed: ``torch.Generator.manual_seed`` takes 0 .. 2**63 - 1 on every platform.
MAX_SEED = 2**63 - 1


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate ``index`` for an image seeded ``seed``: the seed itself for candidate 0
    (so best-of-1 is plain sampling), else a hash of both that no other (seed, index) shares in
    practice (``seed + index`` would make seed 1's first candidate seed 0's second)."""
    if index == 0:
        return seed
    state = np.random.SeedSequence([seed % 2**63, index]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def expand_seeds(
    seeds: Sequence[int] | None, num_images: int, on_repeat: Callable[[str], None] | None = None
) -> list[int]:
    """The seeds of each input's images, every seed once, in the order given.

    Seed s gives ``num_images`` images seeded s, s+1, ..., s+num_images-1: seeds 5 and 20 with two images
    each are 5, 6, 20, 21. A seed reached twice (5 and 5; 1 and 2 with two images each reach 2 twice)
    would make the same image twice, so it is made once (1, 2, 3) and ``on_repeat`` (when given) receives
    one line that says so. No seed: one random seed per image series (recorded with each image).

    Raises:
        UsageError: ``num_images`` below 1, or a seed outside 0 .. 2**63 - 1 - (num_images - 1) (the last
            seed must fit torch's generator).
    """
    from sound2image.errors import UsageError
    from sound2image.validation import check_int

    try:  # both are the caller's own arguments: the errors name them as parameters
        num_images = check_int("num_images", num_images, minimum=1)
    except UsageError as error:
        raise UsageError(str(error), parameters=["num_images"]) from None
    base = list(seeds) if seeds else [secrets.randbelow(2**31)]
    for seed in base:
        try:
            check_int("seed", seed, minimum=0, maximum=MAX_SEED - (num_images - 1))
        except UsageError as error:
            raise UsageError(str(error), parameters=["seed"]) from None
    expanded = [int(s) + i for s in base for i in range(num_images)]
    unique = list(dict.fromkeys(expanded))
    if len(unique) < len(expanded) and on_repeat is not None:
        repeated = sorted({s for s in expanded if expanded.count(s) > 1})
        shown = " ".join(map(str, repeated[:10])) + (" ..." if len(repeated) > 10 else "")
        on_repeat(
            f"note: seed(s) {shown} repeat; each seed is made once, so {len(unique)} image(s) per input "
            f"instead of {len(expanded)}"
        )
    return unique
