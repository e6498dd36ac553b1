"""Python filters of ``python_filters:``: each kind, sync and async, answering early or
changing the request, raising, reloaded on SIGHUP, and refused by ``fastgw check``."""

from __future__ import annotations

import json
import signal
import textwrap

import pytest

from fastgw.testing import RecordingUpstream

from .door import SCOPE, AuditTrail, provider_config
from .support import (
    assert_error,
    assert_nothing_reached,
    fetch,
    route,
    run_python,
    wait_until,
)

FILTERS = '''
import asyncio
import json

from fastgw.filters.python import error, post, pre, route


@pre(order=10)
def answer_early(ctx):
    if ctx.request.path == "/echo/teapot":
        ctx.respond(418, "short and stout", {"X-Pot": "tea"})


@pre(order=20)
async def wait_then_answer(ctx):
    await asyncio.sleep(0.01)
    if ctx.request.path == "/echo/later":
        ctx.respond(202, b"accepted later")


@pre(order=30)
def change_the_request(ctx):
    ctx.request.headers["X-Seen"] = json.dumps({
        "route": ctx.route_id, "vars": ctx.vars, "client": ctx.client_ip,
        "sub": ctx.claims.get("sub"), "cert": ctx.certificate is not None,
    })
    if ctx.request.path.startswith("/echo/old/"):
        ctx.request.path = "/echo/new/" + ctx.request.path.removeprefix("/echo/old/")


@pre(order=40)
async def change_after_waiting(ctx):
    await asyncio.sleep(0)
    ctx.request.headers["X-Async"] = "yes"
    ctx.state["async"] = True


@pre(order=50)
def raise_sync(ctx):
    if ctx.request.path == "/echo/raise":
        raise RuntimeError("sync filter broke")


@pre(order=60)
async def raise_async(ctx):
    if ctx.request.path == "/echo/raise-later":
        await asyncio.sleep(0)
        raise KeyError("async filter broke")


@route
def choose(ctx):
    if ctx.request.headers.get("x-lane") == "other":
        ctx.service = "other"
    elif ctx.request.headers.get("x-lane") == "nowhere":
        ctx.service = "nowhere"


@post
def on_the_response(ctx):
    ctx.response_headers["X-Status-Seen"] = str(ctx.status)
    ctx.response_headers["X-State"] = json.dumps(ctx.state)
    if ctx.request.path == "/echo/post-raise":
        raise ValueError("post filter broke")


@error
def on_error(ctx):
    if ctx.request.path.startswith("/dead/"):
        ctx.respond(503, f"fallback for {ctx.status}", {"Retry-After": "1"})
'''

ONLY_SHOP = '''
from fastgw.filters.python import pre


@pre
def shop_only(ctx):
    ctx.request.headers["X-Shop"] = "1"
'''

POST_ONLY = '''
from fastgw.filters.python import post


@post(order=1)
def stamp(ctx):
    ctx.response_headers.add("X-Stamp", f"{ctx.route_id} {ctx.status}")
'''


@pytest.fixture(scope="module")
def other_upstream():
    with RecordingUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("python-filters")
    (path / "filters.py").write_text(FILTERS)
    (path / "shop.py").write_text(ONLY_SHOP)
    (path / "stamp.py").write_text(POST_ONLY)
    return path


@pytest.fixture(scope="module")
def gateway_config(shared_upstream, other_upstream, make_config, idp, workdir):
    return make_config(
        shared_upstream.url,
        auth={"jwt": {"providers": [provider_config(idp)]}},
        audit={"path": str(workdir / "audit.log")},
        services={
            "echo": {"instances": [shared_upstream.url], "retries": 0},
            "other": {"instances": [other_upstream.url]},
            "dead": {"instances": ["http://127.0.0.1:9"], "retries": 0},
        },
        routes=[
            route("echo", "Path=/echo/{first}/**"),
            {**route("secure", "Path=/secure/**"), "auth": "jwt",
             "filters": [f"RequireScopes={SCOPE}"]},
            route("dead", "Path=/dead/**", uri="lb://dead"),
            route("shop", "Path=/shop/**"),
            route("plain", "Path=/plain/**"),
            route("stamped", "Path=/stamped/**"),
        ],
        python_filters=[
            {"file": str(workdir / "filters.py"), "routes": ["echo", "secure", "dead"]},
            {"file": str(workdir / "shop.py"), "routes": ["shop"]},
            {"file": str(workdir / "stamp.py"), "routes": ["stamped"]},
        ],
    )


@pytest.fixture(scope="module")
def gateway(gateway_config, workdir):
    from fastgw.testing import GatewayProcess

    with GatewayProcess(gateway_config, workdir / "gateway") as gw:
        yield gw


@pytest.fixture
def other(other_upstream):
    other_upstream.settle()
    other_upstream.clear()
    return other_upstream


def seen(request) -> dict:
    return json.loads(request.header("x-seen"))


def test_a_sync_pre_filter_answers_with_its_status_headers_and_body(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/teapot")
    assert (response.status, response.body) == (418, b"short and stout")
    assert response.header("x-pot") == "tea"
    assert response.header("x-request-id")
    assert_nothing_reached(upstream)


def test_an_async_pre_filter_answers_later(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/later")
    assert (response.status, response.body) == (202, b"accepted later")
    assert_nothing_reached(upstream)


def test_pre_filters_change_what_goes_upstream(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/old/thing?q=1")
    assert response.status == 200, response
    [request] = upstream.requests
    assert request.target == "/echo/new/thing?q=1"
    assert request.header("x-async") == "yes"
    assert seen(request) == {"route": "echo", "vars": {"first": "old"}, "client": "127.0.0.1",
                             "sub": None, "cert": False}


def test_filters_read_the_verified_claims(gateway, upstream, idp):
    token = idp.mint(sub="alice", scope=SCOPE)
    response = fetch(f"{gateway.url}/secure/x", "-H", f"Authorization: Bearer {token}")
    assert response.status == 200, response
    assert seen(upstream.requests[0])["sub"] == "alice"


def test_pre_filters_run_after_the_door(gateway, upstream):
    assert_error(fetch(f"{gateway.url}/secure/x"), 401)
    assert_nothing_reached(upstream)


def test_a_route_filter_chooses_the_upstream(gateway, upstream, other):
    response = fetch(f"{gateway.url}/echo/lane/1", "-H", "X-Lane: other")
    assert response.status == 200, response
    assert [r.target for r in other.requests] == ["/echo/lane/1"]
    assert upstream.requests == []
    assert fetch(f"{gateway.url}/echo/lane/2").status == 200
    assert [r.target for r in upstream.requests] == ["/echo/lane/2"]


def test_a_route_filter_naming_no_service_is_a_500(gateway, upstream):
    assert_error(fetch(f"{gateway.url}/echo/lane/3", "-H", "X-Lane: nowhere"), 500)
    assert_nothing_reached(upstream)


def test_a_post_filter_sees_the_status_and_changes_the_head(gateway, upstream):
    response = fetch(f"{gateway.url}/echo/status/201")
    assert response.status == 201, response
    assert response.header("x-status-seen") == "201"
    assert json.loads(response.header("x-state")) == {"async": True}


def test_an_error_filter_answers_for_a_failed_upstream(gateway):
    response = fetch(f"{gateway.url}/dead/x")
    assert (response.status, response.body) == (503, b"fallback for 502")
    assert response.header("retry-after") == "1"


@pytest.mark.parametrize(("path", "reason"), [
    ("/echo/raise", "raise_sync: RuntimeError"),
    ("/echo/raise-later", "raise_async: KeyError"),
    ("/echo/post-raise", "on_the_response: ValueError"),
])
def test_a_raising_filter_is_a_500_logged_and_audited_and_the_worker_serves_on(
    gateway, upstream, raw, workdir, path, reason
):
    pid = gateway.pid
    response = fetch(f"{gateway.url}{path}")
    body = assert_error(response, 500)
    line = AuditTrail(workdir / "audit.log").line_for(body["request_id"])
    assert line["event"] == "filter_failed" and line["reason"].endswith(reason), line
    assert wait_until(lambda: f"request {body['request_id']} route echo: python filter"
                      in gateway.stderr_text())
    upstream.settle()
    upstream.clear()
    assert fetch(f"{gateway.url}/echo/after").status == 200
    assert gateway.pid == pid and gateway.returncode is None


def test_filters_apply_to_their_routes_only(gateway, upstream):
    assert fetch(f"{gateway.url}/shop/a").status == 200
    assert fetch(f"{gateway.url}/plain/a").status == 200
    shop, plain = upstream.requests
    assert (shop.header("x-shop"), shop.header("x-seen")) == ("1", None)
    assert (plain.header("x-shop"), plain.header("x-seen")) == (None, None)


def test_a_route_with_post_filters_only(gateway, upstream):
    response = fetch(f"{gateway.url}/stamped/status/404")
    assert response.status == 404, response
    assert response.header("x-stamp") == "stamped 404"
    assert fetch(f"{gateway.url}/plain/x").header("x-stamp") is None


def test_a_changed_file_takes_effect_on_sighup(start_gateway, make_config, upstream, tmp_path):
    filters = tmp_path / "tag.py"
    tagging = textwrap.dedent('''
        from fastgw.filters.python import pre

        @pre
        def tag(ctx):
            ctx.request.headers["X-Tag"] = "{tag}"
    ''')
    filters.write_text(tagging.replace("{tag}", "first"))
    gw = start_gateway(make_config(upstream.url, python_filters=[str(filters)]))
    assert fetch(f"{gw.url}/echo/1").status == 200
    filters.write_text(tagging.replace("{tag}", "second"))
    gw.send_signal(signal.SIGHUP)

    def tagged_second() -> bool:
        fetch(f"{gw.url}/echo/2")
        return upstream.requests[-1].header("x-tag") == "second"

    assert wait_until(tagged_second)
    assert upstream.requests[0].header("x-tag") == "first"
    # A file broken on the next reload keeps the running filters.
    filters.write_text("def broken(:\n")
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload of" in gw.stderr_text())
    assert f"{filters}:1: SyntaxError" in gw.stderr_text()
    assert fetch(f"{gw.url}/echo/3").status == 200
    assert upstream.requests[-1].header("x-tag") == "second"


CHECKED = """\
services:
  echo: {instances: ["http://127.0.0.1:9001"]}
routes:
  - id: echo
    uri: lb://echo
    predicates: [Path=/echo/**]
    auth: none
python_filters:
  - FILTER
"""


@pytest.mark.parametrize(("source", "line", "message"), [
    ("from fastgw.filters.python import pre\n\n@pre\ndef f(ctx)\n    pass\n", 4, "SyntaxError"),
    ("import json\nimport no_such_module_here\n", 2, "ModuleNotFoundError"),
    ("from fastgw.filters.python import post\n\n\n@post\nasync def f(ctx):\n    pass\n", 4,
     "must be plain functions"),
])
def test_check_reports_a_broken_filter_module_with_its_file_and_line(
    tmp_path, source, line, message
):
    module = tmp_path / "broken.py"
    module.write_text(source)
    config = tmp_path / "gateway.yaml"
    config.write_text(CHECKED.replace("FILTER", str(module)))
    result = run_python("-m", "fastgw", "check", "-c", str(config))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"{module}:{line}: "), result.stderr
    assert message in result.stderr


def test_check_reports_a_module_that_does_not_exist_at_its_config_line(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(CHECKED.replace("FILTER", "no_such_filters.module"))
    result = run_python("-m", "fastgw", "check", "-c", str(config))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"{config}:9: "), result.stderr
    assert "no_such_filters" in result.stderr
