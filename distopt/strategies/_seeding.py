"""Random seeds that depend only on the data, so that a strategy rebuilt from its results draws
what the live one drew."""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int | None, *counters: int) -> int:
    """A 32-bit seed from the strategy's seed and data-dependent counters (reproducible)."""
    entropy = [0 if seed is None else int(seed) + 1, *(int(c) for c in counters)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
