"""How much a ``bayes`` suggestion spends: the ``effort`` option and its ``"auto"`` rule.

``fast`` is what keeps 8 workers busy with one-second trials. ``thorough`` is what BoTorch's
tutorial loop spends: its RBF kernel, every fit from the priors run to convergence, 10 restarts
from 512 raw samples, 128 MC samples and 200 L-BFGS-B iterations per acquisition, and as many
raw samples again drawn around the best points, as under ``fast``; at a few times the CPU of
``fast``, and ahead of it on some problems of the quality suite and behind on others
(benchmarks/results/bench_quality_thorough_s29.md). ``auto`` spends that only when trials are slow
enough to hide it: see :func:`choose`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

#: The ``effort`` option's values.
EFFORTS = ("auto", "fast", "thorough")
#: Largest share of the time between two results (mean trial seconds / trials running at once)
#: a thorough suggestion may take under ``"auto"``: a single worker then idles at most ~10% of
#: the time, and several workers' suggestions stay ahead of them in the background.
AUTO_SHARE = 0.1
#: Cost of a thorough suggestion relative to a fast one, assumed until one is measured: the
#: largest ratio on the quality suite, rounded up, so a first thorough suggestion is rarely over
#: its budget. A guess far above the truth costs more than one a little below it: under
#: ``"auto"`` a thorough suggestion that is never tried is never measured, so searches whose
#: pace would hide it keep ``fast`` (the ratios: benchmarks/results/bench_quality_thorough_s29.md).
THOROUGH_COST_RATIO = 5.0


@dataclass(frozen=True)
class Effort:
    """The settings a level of effort stands for.

    Attributes:
        num_restarts, raw_samples, mc_samples: of the acquisition optimisation.
        warm_start: warm-start each GP fit (else a cold fit of ``fit_maxiter`` iterations).
        fit_maxiter: L-BFGS-B iterations of a cold fit (None: BoTorch's fit to convergence).
        acq_maxiter: L-BFGS-B iterations of the acquisition (first point of a batch).
        kernel: the GP's kernel, ``"matern"`` or ``"rbf"`` (``_bayes_model.build_model``).
        input_warping: learn a warping of the inputs (``_bayes_model.build_model``) for
            asks of one point (a batch keeps the plain model: ``BayesStrategy._suggest``).
    """

    num_restarts: int
    raw_samples: int
    mc_samples: int
    warm_start: bool
    fit_maxiter: int | None
    acq_maxiter: int
    kernel: str
    input_warping: bool


@cache
def level(name: str) -> Effort:
    """The settings of ``"fast"`` or ``"thorough"``."""
    # imported here: the model's modules load torch, which a strategy loads when a search starts
    from ._bayes_acquisition import ACQ_MAXITER
    from ._bayes_model import COLD_MAXITER, CONVERGED, DEFAULT_KERNEL

    if name == "fast":
        return Effort(num_restarts=4, raw_samples=128, mc_samples=64, warm_start=True,
                      fit_maxiter=COLD_MAXITER, acq_maxiter=ACQ_MAXITER, kernel=DEFAULT_KERNEL,
                      input_warping=True)
    # BoTorch's multi-objective tutorial loop: fit_gpytorch_mll's defaults from the priors, and
    # optimize_acqf with num_restarts=10, raw_samples=512, maxiter=200, 128 MC samples, and its
    # default RBF kernel (plus as many raw samples around the best points, as at every
    # effort: _bayes_acquisition.SAMPLE_AROUND_BEST). No input warping: a warping shared by
    # the outputs makes each fit to convergence one joint run, which cost 20-40x the CPU of
    # BoTorch's per-output fits (_bayes_model._fit), and it was not measured with this level.
    return Effort(num_restarts=10, raw_samples=512, mc_samples=128, warm_start=False,
                  fit_maxiter=CONVERGED, acq_maxiter=200, kernel="rbf",
                  input_warping=False)


def choose(effort: str, pace: tuple[float, int] | None, seconds: dict[str, float]) -> str:
    """The level a suggestion runs at: ``"fast"`` or ``"thorough"``.

    Under ``"auto"``: thorough when its cost per suggested point (the last measured, else
    ``THOROUGH_COST_RATIO`` times the last fast one) is at most ``AUTO_SHARE`` of the time
    between two results, ``trial_seconds / concurrency``; fast while the pace or any cost is
    unknown (plain ask/tell use, the first model-based suggestion), so a search whose pace is
    never told behaves exactly like ``"fast"``.

    Args:
        pace: ``(mean trial seconds, trials running at once)`` as the orchestrator last
            measured it (:meth:`~distopt.strategies.Strategy.observe_pace`).
        seconds: level -> measured seconds per suggested point of its last ask.
    """
    if effort != "auto":
        return effort
    if pace is None or not seconds:
        return "fast"
    trial_seconds, concurrency = pace
    cost = seconds.get("thorough", seconds.get("fast", 0.0) * THOROUGH_COST_RATIO)
    return "thorough" if cost <= AUTO_SHARE * trial_seconds / max(1, concurrency) else "fast"
