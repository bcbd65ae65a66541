"""Checks of user-given values, with one field-path rule and one message shape.

A field is named as the user wrote it: a top-level setting (``budget``), a nested one joined by
dots (``resources_per_trial.gpu``), and a plug-in's option as it sits in a study file
(``strategy.options.n_initial``, via :func:`option_field`). Every check raises a
:class:`~distopt.ConfigError` reading ``field: problem; fix``, and returns the value it accepted.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import field_error


def is_finite_number(value: Any) -> bool:
    """A finite real number: an int or float (NumPy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def check_ref_point(field: str, ref_point: Any, objectives: Iterable[str]
                    ) -> dict[str, float] | None:
    """A reference point as ``{objective: float}`` for exactly ``objectives`` (None passes)."""
    if ref_point is None:
        return None
    names = list(objectives)
    if not isinstance(ref_point, Mapping) or set(ref_point) != set(names):
        raise field_error(field, f"must map every objective {names} to a number; got "
                                 f"{ref_point!r}")
    for name, value in ref_point.items():
        if not is_finite_number(value):
            raise field_error(f"{field}.{name}", f"must be a finite number; got {value!r}")
    return {name: float(value) for name, value in ref_point.items()}


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``" (did you mean 'cpu'?)"`` for the closest of ``names`` to a mistyped ``name``, else
    ``""``: a name it abbreviates (``grace`` for ``grace_period``), else difflib's closest."""
    names = [str(n) for n in names]
    close = [n for n in names if n.startswith(str(name))][:1] or difflib.get_close_matches(
        str(name), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keywords(field: str, target: Callable[..., Any], given: Iterable[str], *,
                   skip: Iterable[str] = ()) -> None:
    """Refuse a keyword ``target`` does not take, naming the closest and the ones it takes (a
    ``TypeError`` from the call would name Python's internals instead). ``field`` is the
    mapping's path (``strategy.options``); ``skip``: keywords distopt passes itself."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    skip = set(skip)
    names = [p.name for p in parameters if p.name not in skip and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key in given:
        if key not in names:
            raise field_error(f"{field}.{key}", f"is not an option{did_you_mean(key, names)}",
                              f"the options are {', '.join(names) or 'none'}")


def option_field(plugin: str, name: str) -> str:
    """The field path of a plug-in's option: ``option_field("strategy", "n_initial")`` is
    ``strategy.options.n_initial``."""
    return f"{plugin}.options.{name}"


def check_int(field: str, value: Any, minimum: int | None = None, *,
              maximum: int | None = None, allow_none: bool = False) -> int | None:
    """An ``int`` (not a bool) within ``[minimum, maximum]``; None only with ``allow_none``."""
    if value is None and allow_none:
        return None
    bounds = _bounds(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, int) or \
            (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise field_error(field, f"must be an int{bounds}; got {preview(value)}")
    return value


def check_number(field: str, value: Any, minimum: float | None = None, *,
                 maximum: float | None = None, strict: bool = False,
                 allow_none: bool = False) -> float | None:
    """A finite real number within the bounds (``strict``: the minimum itself excluded)."""
    if value is None and allow_none:
        return None
    ok = is_finite_number(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        low = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        high = "" if maximum is None else f"{' and' if low else ''} <= {maximum:g}"
        raise field_error(field, f"must be a finite number{low}{high}; got {preview(value)}")
    return float(value)


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise field_error(field, f"must be one of {', '.join(map(str, choices))}; got "
                                 f"{preview(value)}")
    return value


#: Longest rendering of a user's value inside a message: a study file's value may be huge.
PREVIEW_CHARS = 80
#: Longest single value (characters) a study file or a space constant may hold: a constant is
#: copied into every trial's row, so large data belongs in a file the objective loads.
MAX_SCALAR_CHARS = 10_000
#: The fix for a value over a size limit.
LARGE_DATA_FIX = ("put large data in a file and pass its path instead (e.g. objective.with: "
                  "{data: path/to/data.npz}), and load it inside the objective")


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, without rendering a huge value in full."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = reprlib_repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def reprlib_repr(value: Any) -> str:
    """A bounded repr: nested containers are summarised, so a deep or aliased value cannot
    expand to gigabytes (a YAML alias bomb)."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, PREVIEW_CHARS, PREVIEW_CHARS
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 6
    return shortener.repr(value)


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return "" if maximum is None else f" <= {maximum}"
