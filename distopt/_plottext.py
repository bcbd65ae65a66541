"""Text on plots: titles that fit their figure, and what each parallel-coordinates axis means."""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.figure
import numpy as np


def fit_title(target: Any, text: str, width_in: float) -> None:
    """Set a title wrapped to ``width_in`` inches, so that a long one is never cut at the edge.

    About 11 characters of the ``medium`` font fit in an inch (measuring the rendered text would
    need a draw of the figure before it is shown)."""
    width = max(20, int(width_in * 11))
    wrapped = "\n".join(textwrap.fill(line, width=width, break_long_words=False)
                        for line in text.split("\n"))
    setter = target.suptitle if isinstance(target, matplotlib.figure.Figure) else target.set_title
    setter(wrapped, fontsize="medium")


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """The lowest and highest finite value ((0, 1) when there is none)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)


def axis_ticks(ax: Any, position: int, param: Any, values: list[Any], *,
               scaled: bool = False) -> None:
    """Label an axis with what its ends (or, for a categorical, each choice) stand for."""
    style = {"fontsize": "x-small", "ha": "left", "va": "center", "color": "0.25",
             "clip_on": False, "zorder": 5,
             "bbox": {"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 0.5}}
    if param is not None and type(param).__name__ == "Categorical":
        n = max(1, len(param.choices) - 1)
        for i, choice in enumerate(param.choices):
            ax.text(position + 0.04, i / n, str(choice), **style, gid="category")
        return
    if param is not None and not scaled:
        low, high = float(param.low), float(param.high)
    elif param is None and not scaled:
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers or min(numbers) == max(numbers):  # a constant: one value, in the middle
            if values:
                ax.text(position + 0.04, 0.5, str(values[0]), **style, gid="bound")
            return
        low, high = float(min(numbers)), float(max(numbers))
    else:
        low, high = float(values[0]), float(values[1])
    ax.text(position + 0.04, 0.0, f"{low:.3g}", **style, gid="bound")
    ax.text(position + 0.04, 1.0, f"{high:.3g}", **style, gid="bound")
