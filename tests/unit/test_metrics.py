"""The counters the request path feeds, and the text they render."""

import bisect

from hypothesis import given
from hypothesis import strategies as st

from fastgw.metrics import DURATION_BUCKETS, Metrics, Series, export, merge


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_a_series_counts_each_value_in_its_bucket(values):
    series = Series(DURATION_BUCKETS)
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    for value in values:
        series.observe(value)
        expected[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
    assert series.counts == expected
    assert series.total == sum(values)


def test_a_bound_belongs_to_its_own_bucket():
    series = Series((0.001, 0.01))
    for value in (0.001, 0.01, 0.0105, 0.0):
        series.observe(value)
    assert series.counts == [2, 1, 1]


def test_route_counts_render_with_labels_and_merge():
    metrics = Metrics()
    stats = metrics.route("orders")
    stats.count(1, 200, 0.002)
    stats.count(1, 200, 0.003)
    stats.count(3, 503, 0.5)
    total = Metrics()
    merge(total, export(metrics))
    merge(total, export(metrics))
    text = total.render().decode()
    assert 'fastgw_requests_total{route="orders",method="GET",status="200"} 4' in text
    assert 'fastgw_requests_total{route="orders",method="POST",status="503"} 2' in text
    assert 'fastgw_request_duration_seconds_count{route="orders"} 6' in text
