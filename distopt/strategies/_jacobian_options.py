"""The ``jacobian`` strategy's options, checked once (their meaning: :class:`JacobianStrategy`)."""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_choice, check_int, check_number, option_field

SOURCES = ("auto", "hypergrad", "fd")
RESEEDS = ("trace", "sobol")
DIFFERENCES = ("central", "forward")


def _field(name: str) -> str:
    return option_field("strategy", name)


@dataclass(frozen=True)
class JacobianOptions:
    """Every option of :class:`~distopt.strategies._jacobian.JacobianStrategy` but the seed;
    ``n_initial`` given as None becomes ``2 * population``. A bad value raises a
    :class:`~distopt.ConfigError` naming its field (``strategy.options.<name>``)."""

    population: int
    n_initial: int | None
    source: str
    h: float
    differences: str
    broyden: int
    precondition: float
    lr: float
    lr_max: float
    lr_min: float
    grow: float
    armijo: float
    rtol: float
    atol: float
    tol: float
    ftol: float
    ptol: float
    normalize: bool
    max_steps: int | None
    reseed: str
    trace_step: float

    def __post_init__(self) -> None:
        check_int(_field("population"), self.population, 1)
        check_choice(_field("source"), self.source, SOURCES)
        for name, high in (("h", 0.5), ("lr", 1.0), ("lr_max", 1.0), ("lr_min", 1.0),
                           ("tol", None)):
            check_number(_field(name), getattr(self, name), 0, strict=True, maximum=high)
        for name in ("armijo", "rtol", "atol", "ftol", "ptol"):
            check_number(_field(name), getattr(self, name), 0)
        check_number(_field("grow"), self.grow, 1)
        check_int(_field("max_steps"), self.max_steps, 1, allow_none=True)
        check_int(_field("n_initial"), self.n_initial, self.population, allow_none=True)
        check_choice(_field("differences"), self.differences, DIFFERENCES)
        check_int(_field("broyden"), self.broyden, 0)
        check_number(_field("precondition"), self.precondition, 1)
        check_choice(_field("reseed"), self.reseed, RESEEDS)
        check_number(_field("trace_step"), self.trace_step, 0, strict=True, maximum=1)
        # Plain floats and bools from here on, whatever number types the user gave.
        for name in ("h", "lr", "lr_max", "lr_min", "grow", "armijo", "rtol", "atol", "tol",
                     "ftol", "ptol", "precondition", "trace_step"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "normalize", bool(self.normalize))
        if self.n_initial is None:
            object.__setattr__(self, "n_initial", 2 * self.population)

    @property
    def forward(self) -> bool:
        """Forward differences rather than central ones."""
        return self.differences == "forward"
