"""Random seeds that depend only on the data, so that a strategy rebuilt from its results draws
what the live one drew."""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int | None, *counters: int) -> int:
    """A 32-bit seed from the strategy's seed and data-dependent counters (reproducible)."""
    entropy = [0 if seed is None else int(seed) + 1, *(int(c) for c in counters)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def stream_seed(seed: int | None, stream: int) -> int | None:
    """The seed of a strategy's numbered random stream (``jacobian``: 0 for its starts, 1 for its
    fillers); an unseeded strategy (``seed=None``) gets unseeded streams.

    Unlike :func:`derive_seed`, which mixes in counters that grow with the data, a stream's seed
    is fixed for the whole study, so each stream is one sequence drawn further as the study goes.
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])
