"""Process lifecycle: graceful drain, workers, reload, start-up failures."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from fastgw.testing import GatewayProcess, GatewayStartError

from .support import route, wait_until


@pytest.fixture
def drain_config(make_config, upstream):
    def config(drain_timeout="10s"):
        service = {"instances": [upstream.url], "response_timeout": "60s"}
        return make_config(upstream.url, drain_timeout=drain_timeout, services={"echo": service})

    return config


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_request_and_refuses_new_connections(
    start_gateway, drain_config, upstream, raw, sig
):
    gw = start_gateway(drain_config())
    in_flight = raw(gw.port, timeout=30)
    in_flight.request("GET", "/echo/slow/4")
    upstream.wait_for_requests(1)
    gw.send_signal(sig)
    assert wait_until(lambda: refuses_connections(gw.port), timeout=3)
    assert gw.returncode is None, "exited before the in-flight request finished"
    response = in_flight.read_response()
    assert response.status == 200, response
    assert response.json()["target"] == "/echo/slow/4"
    assert gw.wait(timeout=20) == 0
    assert [r.target for r in upstream.requests] == ["/echo/slow/4"]


def test_a_response_written_during_the_drain_announces_the_close(
    start_gateway, drain_config, upstream, raw
):
    gw = start_gateway(drain_config())
    in_flight = raw(gw.port, timeout=30)
    in_flight.request("GET", "/echo/slow/2")
    upstream.wait_for_requests(1)
    gw.send_signal(signal.SIGTERM)
    assert wait_until(lambda: refuses_connections(gw.port), timeout=3)
    response = in_flight.read_response()
    assert response.status == 200, response
    # so that the client sends nothing more into a connection about to close
    assert response.header("connection") == "close", response
    assert in_flight.closed_by_peer()
    assert gw.wait(timeout=20) == 0


def test_idle_keep_alive_connections_do_not_hold_the_drain(start_gateway, drain_config, raw):
    gw = start_gateway(drain_config(drain_timeout="60s"))
    idle = raw(gw.port)
    assert idle.exchange("GET", "/echo/then-idle").status == 200
    started = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=30) == 0
    assert time.monotonic() - started < 20
    assert idle.closed_by_peer()


def test_an_idle_keep_alive_connection_is_closed_at_once_while_others_drain(
    start_gateway, drain_config, upstream, raw
):
    gw = start_gateway(drain_config())
    idle = raw(gw.port)
    assert idle.exchange("GET", "/echo/before-the-drain").status == 200
    busy = raw(gw.port, timeout=30)
    busy.request("GET", "/echo/slow/4")
    upstream.wait_for_requests(2)
    gw.send_signal(signal.SIGTERM)
    # closed while the drain still waits on the busy one, not when the process ends
    assert idle.closed_by_peer(timeout=3)
    assert idle.buffer == b""
    assert gw.returncode is None
    response = busy.read_response()
    assert response.status == 200, response
    assert response.header("connection") == "close", response
    assert gw.wait(timeout=20) == 0


def test_drain_is_bounded_by_drain_timeout(start_gateway, drain_config, upstream, raw):
    gw = start_gateway(drain_config(drain_timeout="1s"))
    in_flight = raw(gw.port, timeout=60)
    in_flight.request("GET", "/echo/slow/30")
    upstream.wait_for_requests(1)
    started = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    gw.wait(timeout=20)
    assert time.monotonic() - started < 15
    try:
        response = in_flight.read_response(timeout=5)
    except ConnectionError:
        return  # cut off: fine once the drain timeout is over
    assert response.status != 200 or not response.complete, response


def wait_for_workers(gw: GatewayProcess, count: int, timeout: float = 15.0) -> list[int]:
    assert wait_until(lambda: len(gw.children()) == count, timeout, 0.1), gw.children()
    return gw.children()


def serves(gw: GatewayProcess, raw, count: int) -> list[int]:
    """Statuses of ``count`` requests, each on a new connection (0: connection failed)."""
    statuses = []
    for i in range(count):
        try:
            statuses.append(raw(gw.port).exchange("GET", f"/echo/worker/{i}").status)
        except ConnectionError:
            statuses.append(0)
    return statuses


@pytest.mark.parametrize("how", ["flag", "config"])
def test_two_workers_serve_and_a_killed_worker_is_replaced(
    start_gateway, make_config, upstream, raw, how
):
    config = make_config(upstream.url)
    if how == "config":
        config["workers"] = 2
        gw = start_gateway(config)
    else:
        gw = start_gateway(config, args=("--workers", "2"))
    workers = wait_for_workers(gw, 2)
    assert serves(gw, raw, 50) == [200] * 50
    os.kill(workers[0], signal.SIGKILL)
    assert wait_until(lambda: workers[0] not in gw.children() and len(gw.children()) == 2, 15)
    assert wait_until(lambda: serves(gw, raw, 1) == [200], 10)
    assert serves(gw, raw, 20) == [200] * 20
    current = gw.children()
    assert len(set(current) - set(workers)) == 1
    assert gw.stop(timeout=30) == 0
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in current), 10)


def test_sighup_reloads_routes(start_gateway, make_config, upstream, raw):
    config = make_config(upstream.url)
    gw = start_gateway(config)
    assert raw(gw.port).exchange("GET", "/added/x").status == 404
    config["routes"].append(route("added", "Path=/added/**"))
    gw.write_config(config)
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: raw(gw.port).exchange("GET", "/added/x").status == 200, 10, 0.2)
    assert upstream.requests[-1].target == "/added/x"


def test_sighup_with_an_invalid_file_keeps_the_running_config(
    start_gateway, make_config, upstream, raw
):
    gw = start_gateway(make_config(upstream.url))
    gw.config_path.write_text("routes: [\n  {id: broken, uri: lb://nowhere, bogus_key: 1}\n")
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: str(gw.config_path) in gw.stderr_text(), 10, 0.2), gw.stderr_text()
    assert gw.returncode is None
    assert raw(gw.port).exchange("GET", "/echo/still-here").status == 200


def test_sighup_does_not_drop_an_in_flight_request(start_gateway, drain_config, upstream, raw):
    gw = start_gateway(drain_config())
    in_flight = raw(gw.port, timeout=30)
    in_flight.request("GET", "/echo/slow/2")
    upstream.wait_for_requests(1)
    gw.send_signal(signal.SIGHUP)
    response = in_flight.read_response()
    assert response.status == 200, response


def test_invalid_config_fails_to_start_with_its_location(tmp_path, make_config, upstream):
    config = make_config(upstream.url, limitz={"max_body": "1MiB"})
    gw = GatewayProcess(config, tmp_path)
    with pytest.raises(GatewayStartError):
        gw.start()
    assert gw.returncode not in (None, 0)
    assert f"{gw.config_path}:" in gw.stderr_text()
    assert "limitz" in gw.stderr_text()


def test_port_in_use_fails_to_start(tmp_path, make_config, upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(upstream.url, listeners=[{"address": f"127.0.0.1:{port}"}])
        gw = GatewayProcess(config, tmp_path)
        with pytest.raises(GatewayStartError):
            gw.start()
        assert gw.returncode not in (None, 0)
        assert str(port) in gw.stderr_text()
