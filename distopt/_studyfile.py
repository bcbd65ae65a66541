"""Study files: YAML that names an objective, a space, objectives, constraints and run settings.

Trust model: the YAML is parsed with ``yaml.safe_load`` (no Python tags), and the objective is
only ever *imported* from a ``module:function`` string; no text of the file is evaluated as code.
A factory form ``{call: "module:factory", with: {...}}`` calls an imported factory with plain data.
Dunder attributes and standard-library targets (``os:system``, ``builtins:eval``) are refused, so
a study file (or a store's recorded objective, which ``distopt resume`` imports) cannot reach
them; importing a module still runs that module's code, so study files must come from people
you trust, like scripts.

Example::

    objective: {call: "objectives.mixed_symmetry:make_task", with: {seed: 0}}
    space: ../mixed_symmetry.yaml            # or an inline mapping
    objectives: {test_mse: min, params_m: min}
    constraints: {equiv_err.rotation: ["<=", 0.05]}
    strategy: random
    budget: 24
    workers: 2
    seed: 0
    store: runs/mixed_symmetry
    resources_per_trial: {cpu: 1, gpu: 0}
    scheduler: {name: moasha, options: {metrics: {val_mse: min}, grace_period: 4}}  # optional
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _yaml
from ._checks import check_keywords, did_you_mean
from ._codepath import add_code_folders
from ._errors import ConfigError, field_error
from ._study import Study, check_run_settings

_TOP_KEYS = {"objective", "space", "objectives", "constraints", "strategy", "budget", "workers",
             "seed", "store", "resources_per_trial", "address", "max_retries", "trial_timeout",
             "ref_point", "name", "description", "scheduler", "cohort_size",
             "max_consecutive_failures"}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class StudyFile:
    """A loaded study file: the Study, its objective, and how to run it."""

    path: Path | None
    study: Study
    objective: Callable[[dict[str, Any]], Any]
    objective_spec: Any
    run: dict[str, Any] = field(default_factory=dict)  # budget, workers, resources_per_trial, ...

    def optimize(self, **overrides: Any):
        """Run the study with the file's settings, updated by ``overrides``."""
        settings = {**self.run, **{k: v for k, v in overrides.items() if v is not None}}
        return self.study.optimize(self.objective, **settings)


def import_object(spec: str, *, field_name: str = "objective") -> Any:
    """Import ``module:attribute`` (dotted attributes allowed); errors name ``field_name``."""
    if not isinstance(spec, str) or not _IMPORT_PATH.match(spec):
        raise field_error(field_name, f"must be 'module:function'; got {spec!r}",
                          "e.g. objectives.mixed_symmetry:make_task")
    module_name, attribute = spec.split(":")
    if any(part.startswith("__") for part in attribute.split(".")) or _is_stdlib(module_name):
        raise field_error(field_name, f"{spec!r} is refused: a study file may only name a public "
                                      f"function of your own code, not a dunder or the standard "
                                      f"library", "e.g. my_package.tasks:objective")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None)
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            # found, but it imports something that is not there: that is what to install
            raise field_error(field_name, f"importing module {module_name!r} failed: "
                                          f"{type(error).__name__}: {error}",
                              f"install {missing.split('.')[0]}, or fix that import in "
                              f"{module_name}") from None
        raise field_error(field_name, f"cannot import module {module_name!r} ({error})",
                          "install it, or put it in the working directory or the study "
                          "file's folder") from None
    except Exception as error:  # the module itself failed while importing
        raise field_error(field_name, f"importing module {module_name!r} failed: "
                                      f"{type(error).__name__}: {error}",
                          "fix that module") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [n for n in dir(target) if not n.startswith("_")
                      and callable(getattr(target, n, None))]
            raise field_error(field_name, f"{getattr(target, '__name__', module_name)!r} has no "
                                          f"{part!r}{did_you_mean(part, public)}",
                              f"name one of its functions: {', '.join(public[:8]) or 'none'}"
                              f"{', ...' if len(public) > 8 else ''}")
        target = getattr(target, part)
    if (inspect.isroutine(target) or inspect.isclass(target)) and _is_stdlib(
            getattr(target, "__module__", None) or ""):
        raise field_error(field_name, f"{spec!r} is refused: it is {target!r} of the standard "
                                      f"library, not an objective of your own code",
                          "e.g. my_package.tasks:objective")
    return target


def _is_stdlib(module_name: str) -> bool:
    """Whether ``module_name`` belongs to the standard library (``os``, ``subprocess``, ...)."""
    top = module_name.split(".")[0]
    return top in sys.stdlib_module_names or top in ("builtins", "__main__")


def resolve_objective(spec: Any) -> Callable[[dict[str, Any]], Any]:
    """The objective callable named by a study file's ``objective`` entry."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"call", "with"}
        if unknown or "call" not in spec:
            raise field_error("objective",
                              f"a mapping needs 'call' (and optional 'with'); got keys "
                              f"{sorted(spec)}")
        kwargs = spec.get("with") or {}
        if not isinstance(kwargs, Mapping):
            raise field_error("objective.with", f"must be a mapping of arguments; got {kwargs!r}")
        factory = import_object(spec["call"], field_name="objective.call")
        if not callable(factory):
            raise field_error("objective.call", f"{spec['call']} is not callable")
        check_keywords("objective.with", factory, kwargs)
        try:
            objective = factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise field_error("objective.with", f"{spec['call']} rejected its arguments: {error}") \
                from None
    else:
        objective = import_object(spec)
    if not callable(objective):
        raise field_error("objective", f"{spec!r} does not give a callable objective (it gives "
                                       f"a {type(objective).__name__})",
                          "name a function config -> {metric: number}")
    return objective


def _load_yaml(path: Path, field_name: str) -> Any:
    import yaml

    try:
        text = path.read_text()
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path, text not UTF-8
        raise field_error(field_name, f"cannot read {path} "
                                      f"({getattr(error, 'strerror', None) or error})",
                          "check the path") from None
    try:
        return _yaml.safe_load(text, field=None if field_name == "study file" else field_name)
    except ConfigError:  # a value too large once aliases are expanded: already names its field
        raise
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None)  # PyYAML's reason: "found character '\t' ..."
        why = f" ({problem})" if problem else ""
        raise field_error(field_name, f"{path} is not valid YAML{where}{why}",
                          "fix the syntax there (indent with spaces, not tabs)"
                          if "'\\t'" in str(problem) else "fix the syntax there") from None
    except (ValueError, RecursionError) as error:  # a bad date or !!int, nesting too deep
        raise field_error(field_name, f"{path} has a value YAML cannot build ({error})",
                          "quote it as a string or fix it") from None


def _resolve_space(spec: Any, base: Path | None) -> Any:
    if isinstance(spec, str):
        path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
        data = _load_yaml(path, "space")
        if isinstance(data, Mapping) and set(data) == {"space"}:
            data = data["space"]
        return data
    return spec


def study_from_dict(data: Any, *, base: Path | None = None, path: Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> StudyFile:
    """Validate a parsed study file (``base`` resolves relative space paths)."""
    if not isinstance(data, Mapping):
        got = "nothing (an empty file)" if data is None else type(data).__name__
        raise field_error("study", f"{path or 'the study'} must be a mapping of settings; got "
                                   f"{got}", "see searchspaces/studies/ for examples")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(data) - _TOP_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise field_error(key if key.isprintable() else repr(key),
                          "is not a study setting" + did_you_mean(key, _TOP_KEYS),
                          f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("name", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise field_error(key, f"must be text; got {data[key]!r}")
    for key in ("objective", "space", "objectives"):
        if key not in data:
            raise field_error(key, "is missing", "every study file needs objective, space and "
                                                 "objectives")
    # before the Study: a strategy named by "module:Class" may live beside the objective
    add_code_folders([Path.cwd(), *([base] if base is not None else [])])
    study = Study(_resolve_space(data["space"], base), data["objectives"],
                  data.get("constraints"), strategy=data.get("strategy", "random"),
                  store=data.get("store"), seed=data.get("seed", 0),
                  ref_point=data.get("ref_point"))
    run = {key: data[key] for key in ("budget", "workers", "resources_per_trial", "address",
                                      "max_retries", "trial_timeout", "scheduler",
                                      "cohort_size", "max_consecutive_failures")
           if key in data}
    run.setdefault("budget", 32)
    check_run_settings(**run)
    objective = resolve_objective(data["objective"])
    study.objective_spec = data["objective"]
    study.study_file = str(path.resolve()) if path is not None else None
    return StudyFile(path, study, objective, data["objective"], run)


def load_study_file(path: str | Path, **overrides: Any) -> StudyFile:
    """Load and validate a study YAML; ``overrides`` replace its top-level settings."""
    path = Path(path)
    return study_from_dict(_load_yaml(path, "study file"), base=path.parent, path=path,
                           overrides=overrides)
