"""The live progress bar of a search (tqdm, on stderr)."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """Trials done out of the budget, with running, failed, front size and hypervolume."""

    def __init__(self, budget: int):
        from tqdm import tqdm  # lazy: only searches with a visible bar need it

        self._bar: Any = tqdm(total=budget, unit="trial", dynamic_ncols=True, smoothing=0.1)

    def update(self, progress: Any) -> None:
        """Move the bar to a :class:`~distopt._orchestrator.Progress` snapshot."""
        self._bar.n = progress.finished
        hv = "-" if progress.hypervolume is None else f"{progress.hypervolume:.4g}"
        self._bar.set_postfix_str(f"running={progress.running} failed={progress.failed} "
                                  f"front={progress.front_size} hv={hv}", refresh=True)

    def close(self) -> None:
        """Leave the final state on screen."""
        self._bar.close()
