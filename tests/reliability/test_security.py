"""The security properties of the issue, checked: no eval/exec of configuration text, safe YAML,
no pickles in the store, and the Ray dashboard off by default (and on localhost only when on)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distopt
from distopt import _ray
from distopt._studyfile import load_study_file, study_from_dict
from distopt.examples import two_bowls

LIBRARY = Path(distopt.__file__).resolve().parent
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
#: Files allowed to use pickle, and why (never for a distopt store or a study file).
PICKLE_ALLOWED = {
    "_codepath.py": "the objective, pickled by the driver for its own workers (as Ray pickles "
                    "every actor argument) so that they unpickle it after adding its folders; "
                    "never stored data",
    "interop/tune.py": "Ray Tune's Searcher.save/restore checkpoint, written and read by Tune",
    "testing.py": "the contract suite checks that a strategy survives pickling, as Ray needs; "
                  "it pickles the strategy it was given, never stored data",
}
FORBIDDEN_ATTRIBUTES = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                        ("yaml", "Loader"), ("yaml", "UnsafeLoader"), ("yaml", "FullLoader"),
                        ("torch", "load"), ("np", "load"), ("numpy", "load")}


def _library_sources() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


@pytest.mark.parametrize("source", _library_sources(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_the_library_never_evaluates_text_or_unpickles(source):
    tree = ast.parse(source.read_text(), filename=str(source))
    forbidden_modules = set() if str(source.relative_to(LIBRARY)) in PICKLE_ALLOWED else \
        FORBIDDEN_MODULES
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in FORBIDDEN_CALLS:
            problems.append(f"line {node.lineno}: {node.func.id}()")
        if isinstance(node, ast.Import):
            problems += [f"line {node.lineno}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] in forbidden_modules]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in \
                forbidden_modules:
            problems.append(f"line {node.lineno}: from {node.module} import")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES:
            problems.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert problems == []


PAYLOADS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/module:os",
]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("field", ["objective", "budget", "space", "store"])
def test_yaml_python_tags_are_refused_and_never_run(tmp_path, payload, field):
    marker = tmp_path / "PWNED"
    values = {"objective": "distopt.examples:two_bowls",
              "space": "{x: {type: float, low: 0, high: 1}}", "budget": "4",
              "store": str(tmp_path / "store")}
    values[field] = payload.format(marker=marker)
    study = tmp_path / "study.yaml"
    study.write_text("objectives: {f1: min, f2: min}\n" +
                     "".join(f"{k}: {v}\n" for k, v in values.items()))
    with pytest.raises(distopt.ConfigError, match=r"^study file: .* is not valid YAML"):
        load_study_file(study)
    assert not marker.exists()


@pytest.mark.parametrize("spec", [
    "__import__('os').system('touch {marker}')",
    "os:system", "subprocess:check_call", "builtins:exec", "builtins:eval",
    "distopt.examples:__builtins__.exec", "distopt.examples:time.sleep",
    {"call": "os:system", "with": {"command": "touch {marker}"}},
    {"call": "subprocess:run", "with": {"args": ["touch", "{marker}"]}},
    {"call": "distopt.examples:__builtins__.exec", "with": {"source": "open('{marker}', 'w')"}},
])
def test_objectives_are_imported_from_module_function_strings_only(tmp_path, spec):
    marker = tmp_path / "PWNED"
    spec = json.loads(json.dumps(spec).replace("{marker}", str(marker)))
    data = {"objective": spec, "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "objectives": {"f1": "min", "f2": "min"}, "store": str(tmp_path / "store")}
    with pytest.raises(distopt.ConfigError, match=r"^objective"):
        study_from_dict(data)
    assert not marker.exists()
    assert not (tmp_path / "store").exists()


def test_a_factory_objective_gets_plain_data_only(tmp_path):
    data = {"objective": {"call": "distopt.examples:two_bowls", "with": {"config": {"x": 0.5}}},
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "objectives": {"f1": "min", "f2": "min"}}
    with pytest.raises(distopt.ConfigError, match=r"^objective: .* does not give a callable"):
        study_from_dict(data)


def _primitive(field: pa.Field) -> bool:
    kind = field.type
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
            or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind) or pa.types.is_null(kind))


def test_the_store_holds_no_pickles(ray_local, tmp_path):
    path = tmp_path / "store"
    study = distopt.Study({"x": distopt.Float(0.0, 1.0), "epochs": 2}, {"f1": "min", "f2": "min"},
                          {"g": ["<=", 0.8]}, store=path)
    study.optimize(two_bowls, budget=6, workers=2)

    files = sorted(p for p in path.rglob("*") if p.is_file())
    kinds = set()
    for file in files:
        data = file.read_bytes()
        assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data, file  # pickle 4/5
        if file.name in ("study.json", "LOCK"):
            if data:
                json.loads(data)
            kinds.add(file.name)
        elif file.suffix == ".arrow":
            with pa.ipc.open_stream(pa.BufferReader(data)) as reader:
                schema = reader.schema
                reader.read_all()
            kinds.add("arrow")
        elif file.suffix == ".parquet":
            schema = pq.read_schema(file)
            pq.read_table(file)
            kinds.add("parquet")
        else:
            pytest.fail(f"unexpected file in the store: {file}")
        if file.suffix in (".arrow", ".parquet"):
            assert all(_primitive(f) for f in schema), schema
            metadata = {k.decode(): v for k, v in (schema.metadata or {}).items()}
            assert not [k for k in metadata if "extension" in k.lower()], metadata
    assert kinds == {"study.json", "LOCK", "parquet"}  # Parquet parts since issue 21


class _Stop(Exception):
    pass


def _embedded_init_options(monkeypatch) -> dict:
    import ray

    seen: dict = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(_Stop):
        with _ray.ray_session(None, workers=1, resources={"cpu": 1.0}):
            pass
    return seen


def test_the_embedded_ray_has_no_dashboard_by_default(monkeypatch):
    monkeypatch.delenv("DISTOPT_DASHBOARD", raising=False)
    options = _embedded_init_options(monkeypatch)
    assert options["include_dashboard"] is False
    assert options["address"] == "local"  # never a cluster some `ray start` left running


@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_the_opt_in_dashboard_listens_on_localhost_only(monkeypatch, value):
    monkeypatch.setenv("DISTOPT_DASHBOARD", value)
    options = _embedded_init_options(monkeypatch)
    assert options["include_dashboard"] is True
    assert options["dashboard_host"] == "127.0.0.1"


def test_the_readme_states_the_trust_model():
    readme = (LIBRARY.parent / "README.md").read_text()
    assert "## Security and trust model" in readme
    section = readme.split("## Security and trust model", 1)[1].split("\n## ", 1)[0]
    for needle in ("DISTOPT_DASHBOARD", "127.0.0.1", "safe_load", "module:function", "pickle",
                   "trust"):
        assert needle in section, needle
