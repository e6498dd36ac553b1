"""The shop's filters, tested over real sockets: run ``pytest`` in this folder."""

from pathlib import Path

from fastgw.testing import RecordingUpstream

FILTERS = Path(__file__).with_name("filters.py")


def test_a_banned_client_is_answered_by_the_filter(fastgw_filters, fastgw_upstream):
    gateway = fastgw_filters(FILTERS)
    response = gateway.fetch("GET", "/shop/main/cart", {"X-Banned": "yes"})
    assert (response.status, response.body) == (403, b'{"error": "banned"}')
    assert fastgw_upstream.requests == []


def test_the_tenant_goes_upstream_and_comes_back(fastgw_filters, fastgw_upstream):
    gateway = fastgw_filters(FILTERS)
    response = gateway.fetch("GET", "/shop/main/cart")
    assert response.status == 200
    assert response.header("x-served-for") == "public"
    [request] = fastgw_upstream.wait_for_requests(1)
    assert request.header("x-tenant") == "public"


def test_canary_requests_go_to_the_canary(fastgw_filters, fastgw_upstream):
    with RecordingUpstream() as canary:
        gateway = fastgw_filters(FILTERS, services={
            "app": {"instances": [fastgw_upstream.url]},
            "canary": {"instances": [canary.url]},
        })
        assert gateway.fetch("GET", "/shop/main/cart", {"X-Canary": "1"}).status == 200
        assert [r.path for r in canary.wait_for_requests(1)] == ["/shop/main/cart"]
        assert fastgw_upstream.requests == []


def test_a_failing_backend_gets_the_resting_page(fastgw_filters):
    gateway = fastgw_filters(FILTERS, services={"app": {"instances": ["http://127.0.0.1:9"],
                                                        "retries": 0}})
    response = gateway.fetch("GET", "/shop/main/cart")
    assert response.status == 503
    assert response.header("retry-after") == "5"
    assert response.body == b"the shop is resting; try again soon"
