"""The Spring Cloud Gateway notations for predicates and filters.

A predicate or filter is written either as a shortcut, ``Name=arg1, arg2``,
or expanded, ``{name: Name, args: {...}}``. Both become a name and a tuple of
string arguments. Regexes and replacements written the Java way
(``(?<name>...)``, ``$\\{name}``, ``$1``) are translated to Python ``re``.
"""

from __future__ import annotations

import re

from .units import show

PREDICATE_ARGS: dict[str, tuple[str, ...]] = {
    "Path": ("patterns",),
    "Method": ("methods",),
    "Host": ("patterns",),
    "Header": ("header", "regexp"),
}

FILTER_ARGS: dict[str, tuple[str, ...]] = {
    "RequireScopes": ("scopes",),
    "RateLimit": ("limit",),
    "TokenRelay": (),
    "StripPrefix": ("parts",),
    "RewritePath": ("regexp", "replacement"),
    "AddRequestHeader": ("name", "value"),
    "SetRequestHeader": ("name", "value"),
    "RemoveRequestHeader": ("name",),
    "AddResponseHeader": ("name", "value"),
}

# In the shortcut form the last of these arguments takes the rest of the text,
# commas included, so that header values and replacements may hold commas.
_FIXED_ARITY = {
    "Header": 2,
    "RewritePath": 2,
    "AddRequestHeader": 2,
    "SetRequestHeader": 2,
    "AddResponseHeader": 2,
    "RemoveRequestHeader": 1,
    "StripPrefix": 1,
}


def split_shortcut(text: str) -> tuple[str, tuple[str, ...]]:
    name, equals, rest = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise ValueError(f"{show(text)} is not NAME=ARGS (a filter without arguments is NAME=)")
    if not rest.strip():
        return name, ()
    arity = _FIXED_ARITY.get(name)
    parts = rest.split(",", arity - 1) if arity else rest.split(",")
    return name, tuple(part.strip() for part in parts)


def expanded_args(name: str, args: object, known: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The arguments of ``{name: ..., args: ...}``, in the order ``name`` takes them.

    ``args`` may be a mapping (by argument name for a known predicate or
    filter, in written order otherwise), a list, or a single value; list
    values are spread into several arguments.
    """
    if args is None:
        return ()
    if not isinstance(args, dict):
        return _spread(args)
    names = known.get(name)
    if names is None:
        values = list(args.values())
    else:
        unknown = [key for key in args if key not in names]
        if unknown:
            expected = ", ".join(names) if names else "none"
            raise ValueError(f"{name} has no argument {unknown[0]!r} (arguments: {expected})")
        values = [args[key] for key in names if key in args]
    return tuple(arg for value in values for arg in _spread(value))


def _spread(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    args = []
    for item in items:
        if isinstance(item, bool):
            args.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            args.append(str(item))
        else:
            raise ValueError(f"an argument must be text or a number, not {show(item)}")
    return tuple(args)


_JAVA_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<([A-Za-z][A-Za-z0-9]*)>")


def python_regex(pattern: str) -> str:
    """Java's named group ``(?<name>...)`` becomes Python's ``(?P<name>...)``."""
    return _JAVA_GROUP.sub(r"\1(?P<\2>", pattern)


def compile_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(python_regex(pattern))
    except re.error as exc:
        raise ValueError(f"{show(pattern)} is not a valid regex: {exc}") from None


_JAVA_REFERENCE = re.compile(r"\\(.|$)|\$\{([A-Za-z][A-Za-z0-9]*)\}|\$(\d+)|\$", re.DOTALL)


def python_replacement(replacement: str, regex: re.Pattern) -> str:
    """A Java replacement (``$1``, ``${name}``, ``\\$``) as an ``re.sub`` template.

    Spring writes ``${name}`` as ``$\\{name}`` to keep it from its own property
    expansion; both are understood here.
    """
    replacement = replacement.replace("$\\{", "${")
    problems: list[str] = []

    def translate(match: re.Match) -> str:
        escaped, name, number = match.groups()
        if escaped == "":
            problems.append("it ends with a lone backslash")
            return ""
        if escaped is not None:
            return "\\\\" if escaped == "\\" else escaped
        if name is not None:
            if name not in regex.groupindex:
                problems.append(f"the regex has no group named {name!r}")
            return f"\\g<{name}>"
        if number is not None:
            digits = number[0]
            for digit in number[1:]:
                if int(digits + digit) > regex.groups:
                    break
                digits += digit
            if int(digits) > regex.groups:
                problems.append(f"the regex has no group {digits}")
            return f"\\g<{digits}>" + number[len(digits) :]
        problems.append("a lone '$' (write \\$ for a dollar sign)")
        return ""

    template = _JAVA_REFERENCE.sub(translate, replacement)
    if problems:
        raise ValueError(f"replacement {show(replacement)}: {problems[0]}")
    return template
