"""Durations, sizes and rates as written in a configuration.

Each parser takes what YAML gives (a number or a string) and returns seconds,
bytes or a ``Rate``; a value it cannot read raises ``ValueError`` with a
message that says what would have been right.
"""

from __future__ import annotations

import json
import re

from .model import Rate

_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BYTES = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_PERIODS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?", re.ASCII)
_SIZE = re.compile(r"(?P<number>\d+)(?P<unit>KiB|MiB|GiB)?", re.ASCII)
_LOOSE_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>[A-Za-z]+)", re.ASCII)
_RATE = re.compile(r"(?P<count>\d+)/(?P<unit>[a-z]+)", re.ASCII)


def show(value: object) -> str:
    """A value as it would be written in the file, for messages."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def parse_duration(value: object) -> float:
    """``250ms``, ``30s``, ``5m``, ``1h``, ``1d``, or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative; a duration cannot be")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            return float(match["number"]) * _SECONDS[match["unit"] or "s"]
    raise ValueError(f"{show(value)} is not a duration (use ms, s, m, h or d, as in 250ms or 30s)")


def parse_size(value: object) -> int:
    """``16KiB``, ``10MiB``, ``1GiB``, or a whole number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative; a size cannot be")
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _SIZE.fullmatch(text)
        if match:
            return int(match["number"]) * _BYTES[match["unit"] or ""]
        loose = _LOOSE_SIZE.fullmatch(text)
        unit = loose and _binary_unit(loose["unit"])
        if unit:
            raise ValueError(
                f"{show(value)} is not a size (use bytes, KiB, MiB or GiB; "
                f"did you mean {loose['number']}{unit}?)"
            )
    raise ValueError(f"{show(value)} is not a size (use bytes, KiB, MiB or GiB)")


def _binary_unit(unit: str) -> str | None:
    """The binary unit a near miss such as ``MB``, ``mb`` or ``M`` was meant to be."""
    lowered = unit.lower()
    for prefix, binary in (("k", "KiB"), ("m", "MiB"), ("g", "GiB")):
        if lowered in (prefix, prefix + "b", prefix + "ib"):
            return binary
    return None


def parse_rate(value: object) -> Rate:
    """``1000/min``, ``20/s``, ``50000/h``, ``1000000/day``."""
    if isinstance(value, str):
        text = value.strip()
        match = _RATE.fullmatch(text)
        if match and match["unit"] in _PERIODS:
            count = int(match["count"])
            if count < 1:
                raise ValueError(f"{show(value)}: a rate allows at least 1 request")
            return Rate(count, _PERIODS[match["unit"]], text)
        if match and match["unit"] == "m":
            raise ValueError(f"{show(value)} is ambiguous: write /min for a minute")
    raise ValueError(f"{show(value)} is not a rate (use COUNT/s, /min, /h or /day, as in 1000/min)")
