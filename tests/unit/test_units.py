import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.config.model import Rate
from fastgw.config.units import parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("30", 30.0),
        (" 10s ", 10.0),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 sec", '"10 sec" is not a duration (use ms, s, m, h or d, as in 250ms or 30s)'),
        ("1m30s", '"1m30s" is not a duration (use ms, s, m, h or d, as in 250ms or 30s)'),
        ("-1s", '"-1s" is not a duration (use ms, s, m, h or d, as in 250ms or 30s)'),
        ("5S", '"5S" is not a duration (use ms, s, m, h or d, as in 250ms or 30s)'),
        (True, "true is not a duration (use ms, s, m, h or d, as in 250ms or 30s)"),
        (None, "null is not a duration (use ms, s, m, h or d, as in 250ms or 30s)"),
        (-1, "-1 is negative; a duration cannot be"),
    ],
)
def test_bad_durations(value, message):
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16KiB", 16 * 1024),
        ("10MiB", 10 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("512", 512),
        (512, 512),
        (0, 0),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 MB", '"10 MB" is not a size (use bytes, KiB, MiB or GiB; did you mean 10MiB?)'),
        ("16KB", '"16KB" is not a size (use bytes, KiB, MiB or GiB; did you mean 16KiB?)'),
        ("1g", '"1g" is not a size (use bytes, KiB, MiB or GiB; did you mean 1GiB?)'),
        ("8kib", '"8kib" is not a size (use bytes, KiB, MiB or GiB; did you mean 8KiB?)'),
        ("1.5MiB", '"1.5MiB" is not a size (use bytes, KiB, MiB or GiB)'),
        ("lots", '"lots" is not a size (use bytes, KiB, MiB or GiB)'),
        (1.5, "1.5 is not a size (use bytes, KiB, MiB or GiB)"),
        (False, "false is not a size (use bytes, KiB, MiB or GiB)"),
        (-1, "-1 is negative; a size cannot be"),
    ],
)
def test_bad_sizes(value, message):
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("1000/min", 1000, 60.0),
        ("20/s", 20, 1.0),
        ("50000/h", 50000, 3600.0),
        ("1000000/day", 1000000, 86400.0),
        ("5/sec", 5, 1.0),
        ("5/second", 5, 1.0),
        ("5/minute", 5, 60.0),
        ("5/hour", 5, 3600.0),
        ("5/d", 5, 86400.0),
    ],
)
def test_rates(text, count, period):
    assert parse_rate(text) == Rate(count, period, text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0/s", '"0/s": a rate allows at least 1 request'),
        ("10/m", '"10/m" is ambiguous: write /min for a minute'),
        ("10 per s", '"10 per s" is not a rate (use COUNT/s, /min, /h or /day, as in 1000/min)'),
        ("10/week", '"10/week" is not a rate (use COUNT/s, /min, /h or /day, as in 1000/min)'),
        ("1.5/s", '"1.5/s" is not a rate (use COUNT/s, /min, /h or /day, as in 1000/min)'),
        (100, "100 is not a rate (use COUNT/s, /min, /h or /day, as in 1000/min)"),
    ],
)
def test_bad_rates(value, message):
    with pytest.raises(ValueError) as info:
        parse_rate(value)
    assert str(info.value) == message


@given(st.integers(min_value=0, max_value=10**9))
def test_milliseconds_are_thousandths(n):
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "KiB", "MiB", "GiB"]))
def test_sizes_are_binary_multiples(n, unit):
    factor = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    assert parse_size(f"{n}{unit}") == n * factor


@given(st.text(max_size=12))
def test_parsers_raise_only_value_error(text):
    for parse in (parse_duration, parse_size, parse_rate):
        with contextlib.suppress(ValueError):
            parse(text)
