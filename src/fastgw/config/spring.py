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
    "After": ("datetime",),
    "Before": ("datetime",),
    "Between": ("datetime1", "datetime2"),
    "Cookie": ("name", "regexp"),
    "Header": ("header", "regexp"),
    "Host": ("patterns",),
    "Method": ("methods",),
    "Path": ("patterns", "matchTrailingSlash"),
    "Query": ("param", "regexp"),
    "RemoteAddr": ("sources",),
    "XForwardedRemoteAddr": ("sources",),
    "Weight": ("group", "weight"),
}

FILTER_ARGS: dict[str, tuple[str, ...]] = {
    "RequireScopes": ("scopes",),
    "RateLimit": ("limit",),
    "TokenRelay": (),
    "StripPrefix": ("parts",),
    "RewritePath": ("regexp", "replacement"),
    "AddRequestHeader": ("name", "value"),
    "AddRequestHeadersIfNotPresent": ("headers",),
    "AddRequestParameter": ("name", "value"),
    "MapRequestHeader": ("fromHeader", "toHeader"),
    "RemoveRequestParameter": ("name",),
    "RewriteRequestParameter": ("name", "replacement"),
    "SetRequestHeader": ("name", "value"),
    "RemoveRequestHeader": ("name",),
    "SetRequestHostHeader": ("host",),
    "PreserveHostHeader": (),
    "AddResponseHeader": ("name", "value"),
    "SetResponseHeader": ("name", "value"),
    "RemoveResponseHeader": ("name",),
    "DedupeResponseHeader": ("name", "strategy"),
    "RewriteResponseHeader": ("name", "regexp", "replacement"),
    "RewriteLocationResponseHeader": (
        "stripVersionMode", "locationHeaderName", "hostValue", "protocolsRegex",
    ),
    "SecureHeaders": (),
    "PrefixPath": ("prefix",),
    "SetPath": ("template",),
    "RedirectTo": ("status", "url", "includeRequestParams"),
    "SetStatus": ("status",),
    "RequestSize": ("maxSize",),
    "RequestHeaderSize": ("maxSize", "errorHeaderName"),
    "RequestRateLimiter": (
        "redisRateLimiter.replenishRate", "redisRateLimiter.burstCapacity",
        "redisRateLimiter.requestedTokens",
    ),
}

# Arguments a mapping may leave out, as SCG's defaults, so the others keep their places.
_DEFAULTS = {
    "RewriteLocationResponseHeader": {"stripVersionMode": "AS_IN_REQUEST",
                                      "locationHeaderName": "Location", "hostValue": "",
                                      "protocolsRegex": ""},
    "RequestRateLimiter": {"redisRateLimiter.burstCapacity": "1",
                           "redisRateLimiter.requestedTokens": "1"},
}

# In the shortcut form the last of these arguments takes the rest of the text,
# commas included, so that header values and replacements may hold commas.
_FIXED_ARITY = {
    "Header": 2,
    "Cookie": 2,
    "Query": 2,
    "RewritePath": 2,
    "AddRequestHeader": 2,
    "SetRequestHeader": 2,
    "AddResponseHeader": 2,
    "SetResponseHeader": 2,
    "AddRequestParameter": 2,
    "RewriteRequestParameter": 2,
    "RewriteResponseHeader": 3,
    "RemoveRequestHeader": 1,
    "RemoveResponseHeader": 1,
    "StripPrefix": 1,
    "SetPath": 1,
}


_FACTORY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def refuse_spel(text: str) -> None:
    if "#{" in text:
        raise ValueError(f"{show(text)} holds a SpEL expression (#{{...}}), which needs a JVM")


def split_shortcut(text: str) -> tuple[str, tuple[str, ...]]:
    refuse_spel(text)
    name, _, rest = text.partition("=")
    name = name.strip()
    if not _FACTORY_NAME.fullmatch(name):
        raise ValueError(f"{show(text)} is not NAME=ARGS or NAME")
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
        args = {**_DEFAULTS.get(name, {}), **{camel_case(k): v for k, v in args.items()}}
        if "keyResolver" in args:
            raise ValueError(
                f"{name}: key-resolver names a Java KeyResolver bean; fastgw keys "
                f"{name} by the verified principal"
            )
        unknown = [key for key in args if key not in names]
        if unknown:
            expected = ", ".join(names) if names else "none"
            raise ValueError(f"{name} has no argument {unknown[0]!r} (arguments: {expected})")
        values = [args[key] for key in names if key in args]
    return tuple(arg for value in values for arg in _spread(value))


def camel_case(key: str) -> str:
    """Spring's relaxed binding: ``burst-capacity`` is ``burstCapacity``."""
    head, *rest = key.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _spread(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    args = []
    for item in items:
        if isinstance(item, bool):
            args.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            refuse_spel(str(item))
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
