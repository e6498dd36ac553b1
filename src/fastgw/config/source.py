"""Reading a configuration source into plain values that remember their lines.

YAML files, JSON files and dicts from Python code all become the same tree:
``LineMap`` and ``LineList`` holding str, int, float, bool and None, with
``${VAR}`` references already expanded. The loader then validates that tree
without caring where it came from.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError

DICT_SOURCE = "<dict>"

Problem = tuple[str, int, str]


class LineMap(dict):
    """A mapping that knows the line of each of its keys (0 when unknown)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class LineList(list):
    """A list that knows the line of each of its items (0 when unknown)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []

    def add(self, value: Any, line: int) -> None:
        self.append(value)
        self.lines.append(line)


class EnvText(str):
    """Text taken from the environment.

    Where a number or a boolean is expected it is read as one, so that
    ``port: ${PORT}`` works in YAML, JSON and dicts alike.
    """


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()
"""Stands for a value that could not be read, such as an unset ``${VAR}``; already reported."""


def holds_unset(value: Any) -> bool:
    if isinstance(value, dict):
        return any(holds_unset(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_unset(item) for item in value)
    return value is UNSET


@dataclass
class Document:
    root: LineMap
    file: str
    base_dir: Path
    line: int = 1
    errors: list[Problem] = field(default_factory=list)


def child_path(path: str, key: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def read_document(source: Any, env: Mapping[str, str]) -> Document:
    if isinstance(source, Mapping):
        errors: list[Problem] = []
        root = _from_python(source, "", errors)
        document = Document(root, DICT_SOURCE, Path.cwd(), line=0, errors=errors)
    elif isinstance(source, str | os.PathLike):
        document = _read_file(os.fspath(source))
    else:
        raise TypeError(f"load_config takes a path or a dict, not {type(source).__name__}")
    _Expander(env, document).expand(document.root, "")
    return document


def _read_file(name: str) -> Document:
    try:
        text = Path(name).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([(name, 0, f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([(name, 0, "the file is not UTF-8 text")]) from None
    base_dir = Path(os.path.abspath(os.path.dirname(name) or "."))
    if not text.strip():
        raise ConfigError([(name, 1, "the file is empty")])
    if name.lower().endswith(".json"):
        root, line, errors = _read_json(text, name)
    else:
        root, line, errors = _read_yaml(text, name)
    if not isinstance(root, LineMap):
        raise ConfigError(
            [(name, line, "the top level must be a mapping (listeners:, routes:, ...)")]
        )
    return Document(root, name, base_dir, line=line, errors=errors)


# --- YAML -----------------------------------------------------------------------------


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _read_yaml(text: str, name: str) -> tuple[Any, int, list[Problem]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([(name, *_yaml_problem(exc))]) from None
    if node is None:
        raise ConfigError([(name, 1, "the file is empty")])
    reader = _YamlTree(name)
    return reader.value(node, ""), node.start_mark.line + 1, reader.errors


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        message = f"{exc.problem} ({exc.context})"
    return (mark.line + 1 if mark else 0), message


class _YamlTree:
    """Composed YAML nodes to a line-aware tree; aliases share their value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[Problem] = []
        self.constructor = yaml.SafeLoader("")
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def error(self, node: Node, path: str, message: str) -> None:
        where = f"{path}: " if path else ""
        self.errors.append((self.name, node.start_mark.line + 1, where + message))

    def value(self, node: Node, path: str) -> Any:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            self.error(node, path, "an alias refers to itself")
            return UNSET
        self.active.add(key)
        try:
            if isinstance(node, MappingNode):
                result = self.mapping(node, path)
            elif isinstance(node, SequenceNode):
                result = self.sequence(node, path)
            else:
                result = self.scalar(node, path)
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self.constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            line, message = _yaml_problem(exc)
            self.errors.append((self.name, line, f"{path}: {message}" if path else message))
            return UNSET

    def sequence(self, node: SequenceNode, path: str) -> LineList:
        items = LineList()
        for index, item in enumerate(node.value):
            items.add(self.value(item, item_path(path, index)), item.start_mark.line + 1)
        return items

    def mapping(self, node: MappingNode, path: str) -> LineMap:
        table = LineMap()
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, path, "a mapping or a list cannot be a key")
                continue
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                if key is not UNSET:
                    self.error(key_node, path, f"key {_show_key(key)} is not text (quote it)")
                continue
            if key in table:
                where = child_path(path, key)
                self.error(key_node, where, f"duplicate key (first at line {table.lines[key]})")
                continue
            table[key] = self.value(value_node, child_path(path, key))
            table.lines[key] = line
        for merge in merges:
            self.merge(table, merge, path)
        return table

    def merge(self, table: LineMap, node: Node, path: str) -> None:
        """``<<: *defaults`` keeps explicit keys; among merged maps the first wins."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            merged = self.value(source, path)
            if not isinstance(merged, LineMap):
                self.error(source, path, "'<<' merges only mappings")
                continue
            for key, value in merged.items():
                if key not in table:
                    table[key] = value
                    table.lines[key] = merged.lines[key]


def _show_key(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


# --- JSON -----------------------------------------------------------------------------


def _read_json(text: str, name: str) -> tuple[Any, int, list[Problem]]:
    """Parse JSON with the standard decoder, keeping the line of every value.

    The pure-Python scanner is driven with object and array parsers that see
    each value together with its offset in the text.
    """
    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    errors: list[Problem] = []

    def line_at(offset: int) -> int:
        return bisect.bisect_right(line_starts, offset)

    def scan(string: str, index: int) -> tuple[tuple[Any, int], int]:
        value, end = scan_value(string, index)
        return (value, index), end

    def parse_object(s_and_end, strict, _scan, _hook, _pairs_hook, memo):
        pairs, end = json.decoder.JSONObject(s_and_end, strict, scan, None, list, memo)
        table = LineMap()
        for key, (value, offset) in pairs:
            if key in table:
                message = f"{key}: duplicate key (first at line {table.lines[key]})"
                errors.append((name, line_at(offset), message))
                continue
            table[key] = value
            table.lines[key] = line_at(offset)
        return table, end

    def parse_array(s_and_end, _scan):
        values, end = json.decoder.JSONArray(s_and_end, scan)
        items = LineList()
        for value, offset in values:
            items.add(value, line_at(offset))
        return items, end

    decoder = json.JSONDecoder()
    decoder.parse_object = parse_object
    decoder.parse_array = parse_array
    scan_value = json.scanner.py_make_scanner(decoder)

    start = len(text) - len(text.lstrip())
    try:
        try:
            value, end = scan_value(text, start)
        except StopIteration as stop:
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None
        rest = len(text) - len(text[end:].lstrip())
        if rest != len(text):
            raise json.JSONDecodeError("Extra data", text, rest)
    except json.JSONDecodeError as exc:
        raise ConfigError([(name, exc.lineno, exc.msg)]) from None
    return value, line_at(start), errors


# --- Python values -----------------------------------------------------------------------


def _from_python(value: Any, path: str, errors: list[Problem]) -> Any:
    if isinstance(value, Mapping):
        table = LineMap()
        for key, item in value.items():
            if not isinstance(key, str):
                where = path or "top level"
                errors.append((DICT_SOURCE, 0, f"{where}: key {key!r} is not a string"))
                continue
            table[key] = _from_python(item, child_path(path, key), errors)
            table.lines[key] = 0
        return table
    if isinstance(value, list | tuple):
        items = LineList()
        for index, item in enumerate(value):
            items.add(_from_python(item, item_path(path, index), errors), 0)
        return items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str | int | float):
        return value
    errors.append((DICT_SOURCE, 0, f"{path}: a {type(value).__name__} is not a config value"))
    return UNSET


# --- ${VAR} expansion ----------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


class _Expander:
    def __init__(self, env: Mapping[str, str], document: Document) -> None:
        self.env = env
        self.document = document
        self.seen: set[int] = set()

    def expand(self, node: LineMap | LineList, path: str) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if isinstance(node, LineMap):
            places = [(key, child_path(path, key), node.lines[key]) for key in node]
        else:
            places = [(i, item_path(path, i), node.lines[i]) for i in range(len(node))]
        for key, where, line in places:
            value = node[key]
            if isinstance(value, LineMap | LineList):
                self.expand(value, where)
            elif isinstance(value, str) and "${" in value:
                node[key] = self.text(value, where, line)

    def text(self, value: str, path: str, line: int) -> Any:
        problems: list[str] = []
        substituted = False

        def replace(match: re.Match) -> str:
            nonlocal substituted
            if match.group(0) == "$${":
                return "${"
            substituted = True
            body = match.group("body")
            if body is None:
                problems.append("'${' without a closing '}'")
                return ""
            reference = _BODY.fullmatch(body)
            if reference is None:
                problems.append(f"'${{{body}}}' is not ${{NAME}} or ${{NAME:-default}}")
                return ""
            name, default = reference.group("name", "default")
            if default is not None and "${" in default:
                problems.append(f"'${{{body}}}': a default cannot hold another reference")
                return ""
            found = self.env.get(name)
            if found:
                return found
            if default is not None:
                return default
            if found is None:
                problems.append(
                    f"environment variable {name} is not set (or use ${{{name}:-default}})"
                )
            return ""

        expanded = _REFERENCE.sub(replace, value)
        for problem in problems:
            self.document.errors.append((self.document.file, line, f"{path}: {problem}"))
        if problems:
            return UNSET
        return EnvText(expanded) if substituted else expanded
