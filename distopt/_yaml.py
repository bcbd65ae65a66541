"""Parsing study and space YAML with bounded size: no alias bomb, no huge constant.

``yaml.safe_load`` builds no Python objects beyond plain data, but a kilobyte of nested aliases
("billion laughs") still describes a value of gigabytes once anything renders it (an error
message, ``study.json``, a trial row). PyYAML composes an alias as a reference to the same node,
so the composed graph stays small; :func:`safe_load` measures what that graph *expands to*, with
one visit per distinct node, and refuses it before any value is constructed, printed or stored.
A single huge scalar (a 10 MB constant) is refused the same way: every constant of the space is
copied into every trial row, and ``objective.with`` into ``study.json``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._checks import LARGE_DATA_FIX, MAX_SCALAR_CHARS
from ._errors import field_error

#: Most values (scalars, lists and mappings, with aliases expanded) under one field.
MAX_VALUES = 100_000
#: Most characters of scalars, with aliases expanded, under one field.
MAX_CHARS = 1_000_000


def safe_load(text: str, *, field: str | None = None) -> Any:
    """``yaml.safe_load(text)``, refusing with a ConfigError what would expand past the limits.

    The error names the field as the user wrote it (``objective.with.data``); ``field`` is the
    path of the whole document when it is part of a study (``"space"`` for a space file).
    """
    loader = _BoundedLoader(text)
    loader.field = field
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that measures the composed node graph before constructing anything."""

    field: str | None = None

    def construct_document(self, node: Node) -> Any:
        _measure(node, self.field or "", {}, set())
        return super().construct_document(node)


def _measure(node: Node, path: str, sizes: dict[int, tuple[int, int]],
             open_nodes: set[int]) -> tuple[int, int]:
    """``(values, characters)`` that ``node`` expands to; memoised by node identity, so a chain of
    aliases costs one visit per distinct node however much it expands."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    where = path or "study file"
    if key in open_nodes:
        raise field_error(where, "is a YAML alias that contains itself (a recursive value)",
                          "write the value out instead of referring to it")
    if isinstance(node, ScalarNode):
        chars = len(node.value)
        if chars > MAX_SCALAR_CHARS:
            raise field_error(where, f"holds {chars:,} characters, over the "
                                     f"{MAX_SCALAR_CHARS:,} a study file may hold in one value",
                              LARGE_DATA_FIX)
        sizes[key] = (1, chars)
        return sizes[key]
    open_nodes.add(key)
    values, chars = 1, 0
    if isinstance(node, SequenceNode):
        children = [(f"{path}[{i}]", child) for i, child in enumerate(node.value)]
    elif isinstance(node, MappingNode):
        children = []
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value != "<<":  # "<<": a merge
                line, name = key_node.start_mark.line + 1, (key_node.tag, key_node.value)
                if name in seen:  # PyYAML keeps the last silently: a budget given twice
                    raise field_error(_join(path, key_node) or where,
                                      f"is given twice (lines {seen[name]} and {line})",
                                      "keep one")
                seen[name] = line
            children.append((f"{path}<key>", key_node))
            children.append((_join(path, key_node), value_node))
    else:  # pragma: no cover - PyYAML composes only these three kinds
        children = []
    for child_path, child in children:
        n, c = _measure(child, child_path, sizes, open_nodes)
        values, chars = values + n, chars + c
    open_nodes.discard(key)
    if values > MAX_VALUES or chars > MAX_CHARS:
        raise field_error(where, f"expands to {values:,} values and {chars:,} characters "
                                 f"(limits {MAX_VALUES:,} and {MAX_CHARS:,}; nested YAML aliases "
                                 f"multiply)", LARGE_DATA_FIX)
    sizes[key] = (values, chars)
    return sizes[key]


def _join(path: str, key_node: Node) -> str:
    """The field path of a mapping's value: ``space.lr``; a non-text key in brackets."""
    name = key_node.value if isinstance(key_node, ScalarNode) else "<key>"
    if not isinstance(name, str) or not name.isprintable() or len(name) > 40:
        name = "<key>"
    return f"{path}.{name}" if path else name
