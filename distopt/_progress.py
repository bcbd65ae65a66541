"""The live progress bar of a search (tqdm, on stderr), and the line when there is nothing to run.

The bar counts every finished trial of the store against the budget, those of earlier runs too,
so a resumed search starts where the last one stopped; trials running on a worker and trials
handed to a worker but not yet started (queued) are shown apart.
"""

from __future__ import annotations

import sys
from typing import Any

from ._logging import quiet_ray_import

# optimize() imports this module before it first imports Ray: the place to keep Ray's notebook
# messages quiet until distopt._ray does it itself.
quiet_ray_import()


def _tqdm_class() -> Any:
    """``tqdm.auto`` (a notebook widget) only when ipywidgets is importable; otherwise the plain
    text bar, which notebooks show as well, without ``TqdmWarning: IProgress not found``."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm

        return tqdm
    from tqdm.auto import tqdm

    return tqdm


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (not merely with ipykernel imported, as a test
    process that ran a notebook has it)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class ProgressBar:
    """Trials done out of the budget, with running, queued, failed, front size and hypervolume."""

    def __init__(self, budget: int, stored: int = 0):
        self._bar: Any = _tqdm_class()(total=budget, initial=stored, unit="trial",
                                       dynamic_ncols=True, smoothing=0.1)
        self._stored = stored
        # In a terminal or a notebook the bar redraws in place twice a second; in a file (stderr
        # redirected) each redraw is another line, so it is drawn only when a trial finishes.
        self._live = sys.stderr.isatty() or _in_notebook()
        self._shown = stored

    def update(self, progress: Any) -> None:
        """Move the bar to a :class:`~distopt._orchestrator.Progress` snapshot.

        ``progress.finished`` counts the store's trials, ``stored`` of which were there before
        this run (they do not count towards the rate); ``queued`` and ``stored`` may be absent.
        """
        stored = getattr(progress, "stored", self._stored)
        if stored != self._stored:  # the rate counts this run's trials only
            self._stored = self._bar.initial = stored
        self._bar.n = progress.finished
        hv = "-" if progress.hypervolume is None else f"{progress.hypervolume:.4g}"
        queued = getattr(progress, "queued", 0)
        parts = [f"running={progress.running}"] + ([f"queued={queued}"] if queued else [])
        parts += [f"failed={progress.failed}", f"front={progress.front_size}", f"hv={hv}"]
        finished, self._shown = progress.finished != self._shown, progress.finished
        self._bar.set_postfix_str(" ".join(parts), refresh=self._live or finished)

    def close(self) -> None:
        """Leave the final state on screen."""
        self._bar.close()
