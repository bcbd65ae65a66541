"""What strategies and schedulers share: binding to a problem, and the ``{name, options}`` spec.

Both are plug-ins chosen by name in the API, a study file or the CLI, and both learn the
problem (space, objectives, constraints) once, before the orchestrator calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import DistoptError, field_error
from ._problem import Problem


class ProblemBound:
    """A plug-in bound to one :class:`~distopt.Problem` (subclasses prepare in ``_setup``)."""

    _problem: Problem | None = None

    @property
    def problem(self) -> Problem:
        """The problem this object was bound to."""
        if self._problem is None:
            raise DistoptError(f"{type(self).__name__} is not bound; call bind(problem) first")
        return self._problem

    def bind(self, problem: Problem) -> None:
        """Attach the problem; called once before use. Binding again starts afresh."""
        self.check(problem)
        self._problem = problem
        self._setup(problem)

    def check(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """Raise a :class:`~distopt.ConfigError` naming the field when this plug-in cannot work
        on ``problem``; the default accepts every problem.

        Cheap and without heavy imports: a :class:`~distopt.Study` calls it when it is made, so
        that a bad combination fails before anything is written (binding, which may import
        BoTorch, runs while the store and Ray start); ``bind`` calls it again.
        """

    def _setup(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """Prepare for ``problem``; the default does nothing."""


def split_spec(spec: Any, field: str, example: str) -> tuple[Any, dict[str, Any]]:
    """``(name, options)`` of ``name`` or ``{name: ..., options: {...}}``; other values pass
    through as the name, for the caller to check.

    Args:
        field: the setting, for the error (``"strategy"``, ``"scheduler"``).
        example: a valid mapping, shown in the error.
    """
    if not isinstance(spec, Mapping):
        return spec, {}
    unknown = set(spec) - {"name", "options"}
    if unknown or "name" not in spec:
        raise field_error(field, f"a mapping needs 'name' and optional 'options'; got keys "
                                 f"{sorted(spec)}", f"e.g. {example}")
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise field_error(f"{field}.options", f"must be a mapping of option to value; got "
                                              f"{options!r}")
    return spec["name"], dict(options)
