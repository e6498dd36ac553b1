import ipaddress
import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest

from fastgw.config import (
    Admin,
    ConfigError,
    HealthCheck,
    Instance,
    Limits,
    Listener,
    Outlier,
    Predicate,
    Rate,
    RateLimit,
    Service,
    ServiceTLS,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]

# A valid base that the cases below extend; line numbers count from its first line.
BASE = """\
listeners:
  - address: 127.0.0.1:0
auth:
  jwt:
    providers:
      - {name: corp, issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks}
"""
BASE_LINES = BASE.count("\n")


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, *, name: str = "gateway.yaml", env=None):
    return load_config(write(tmp_path, text, name), env=env or {})


def errors(tmp_path: Path, text: str, *, name: str = "gateway.yaml", env=None) -> list[str]:
    """Every reported problem as 'LINE: message' (the file name checked once here)."""
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    assert {file for file, _, _ in info.value.errors} == {str(path)}
    return [f"{line}: {message}" for _, line, message in info.value.errors]


def dict_errors(config: dict, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config, env=env or {})
    assert {(file, line) for file, line, _ in info.value.errors} == {("<dict>", 0)}
    return [message for _, _, message in info.value.errors]


def extended(text: str) -> str:
    """BASE followed by ``text``; the first line of ``text`` is line BASE_LINES + 1."""
    return BASE + textwrap.dedent(text).lstrip("\n")


# --- the reference examples ---------------------------------------------------------------


def test_the_example_file_loads():
    config = load_config(ROOT / "examples" / "gateway.yaml", env={})
    assert [(listener.host, listener.port) for listener in config.listeners] == [("0.0.0.0", 8080)]
    assert [route.id for route in config.routes] == ["order-service", "order-search", "health"]
    search = config.routes[1]
    assert search.filters[1].args == ("/search/orders/(?P<rest>.*)", "/orders/\\g<rest>")
    assert search.filters[2].args == ("Cache-Control", "no-store, max-age=0")
    assert config.services["http://127.0.0.1:9001"].instances == (
        Instance("http", "127.0.0.1", 9001),
    )


def test_the_example_file_takes_its_address_from_the_environment():
    config = load_config(ROOT / "examples" / "gateway.yaml", env={"FASTGW_ADDRESS": "[::1]:0"})
    assert config.listeners[0].host == "::1"


# --- defaults ------------------------------------------------------------------------------


def test_an_empty_mapping_gets_every_default():
    config = load_config({})
    assert config.listeners == (Listener("0.0.0.0", 8080),)
    assert config.admin == Admin("127.0.0.1", 9901)
    assert config.limits == Limits()
    assert config.workers == 1
    assert config.drain_timeout == 30.0
    assert config.routes == ()
    assert config.redis is None and config.audit is None
    assert config.source == "<dict>"


def test_a_file_config_remembers_its_source(tmp_path):
    path = write(tmp_path, BASE)
    assert load_config(str(path), env={}).source == str(path)


def test_service_defaults_come_from_the_model(tmp_path):
    config = load(tmp_path, extended("""
        services:
          orders: {instances: http://orders}
    """))
    assert config.services["orders"] == Service(
        "orders", (Instance("http", "orders", 80),), line=BASE_LINES + 2
    )


# --- reading files -------------------------------------------------------------------------


def test_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:0: cannot read the file: No such file or directory"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_file(tmp_path, text):
    assert errors(tmp_path, text) == ["1: the file is empty"]


@pytest.mark.parametrize(("text", "line"), [("- a\n- b\n", 1), ("text\n", 1), ("\n\n42\n", 3)])
def test_the_top_level_must_be_a_mapping(tmp_path, text, line):
    assert errors(tmp_path, text) == [
        f"{line}: the top level must be a mapping (listeners:, routes:, ...)"
    ]


def test_yaml_syntax_errors_have_a_line(tmp_path):
    assert errors(tmp_path, "workers: 1\nlisteners: [1\nroutes: []\n") == [
        "3: expected ',' or ']', but got ':' (while parsing a flow sequence)"
    ]


def test_one_document_per_file(tmp_path):
    assert errors(tmp_path, "workers: 1\n---\nworkers: 2\n") == [
        "2: but found another document (expected a single document in the stream)"
    ]


def test_duplicate_keys(tmp_path):
    assert errors(tmp_path, extended("""
        workers: 1
        limits:
          max_headers: 10
          max_headers: 20
        workers: 2
    """)) == [
        "10: limits.max_headers: duplicate key (first at line 9)",
        "11: workers: duplicate key (first at line 7)",
    ]


def test_keys_must_be_text(tmp_path):
    assert errors(tmp_path, extended("""
        limits:
          1: x
          true: y
          ? [a]
          : z
    """)) == [
        "8: limits: key 1 is not text (quote it)",
        "9: limits: key true is not text (quote it)",
        "10: limits: a mapping or a list cannot be a key",
    ]


def test_anchors_aliases_and_merge_keys(tmp_path):
    config = load(tmp_path, extended("""
        x-service: &service
          balancer: random
          retries: 0
        services:
          a:
            <<: *service
            instances: http://a
          b:
            <<: *service
            instances: [http://b]
            retries: 3
    """))
    assert config.services["a"].balancer == "random"
    assert (config.services["a"].retries, config.services["b"].retries) == (0, 3)


def test_a_merged_key_is_reported_where_it_was_written(tmp_path):
    assert errors(tmp_path, extended("""
        x-service: &service
          balancr: random
        services:
          a:
            <<: *service
            instances: http://a
    """)) == ["8: services.a.balancr: unknown key (did you mean 'balancer'?)"]


def test_extension_keys_only_at_the_top(tmp_path):
    assert errors(tmp_path, extended("""
        x-anything: {free: form}
        limits:
          x-note: no
    """)) == [
        "9: limits.x-note: unknown key (known: max_request_line, max_header_bytes, "
        "max_headers, max_body, header_timeout, idle_timeout, max_connections)"
    ]


def test_a_recursive_alias(tmp_path):
    assert errors(tmp_path, extended("""
        trusted_proxies: &loop [10.0.0.0/8, *loop]
    """)) == [f"{BASE_LINES + 1}: trusted_proxies[1]: an alias refers to itself"]


def test_unsafe_tags_are_refused(tmp_path):
    [problem] = errors(tmp_path, extended("""
        workers: !!python/object:os.system echo
    """))
    assert problem.startswith(f"{BASE_LINES + 1}: workers: could not determine a constructor")


# --- JSON ------------------------------------------------------------------------------------


JSON_CONFIG = {
    "listeners": [{"address": "127.0.0.1:0"}],
    "services": {"orders": {"instances": ["http://127.0.0.1:9001"]}},
    "routes": [
        {"id": "orders", "uri": "lb://orders", "auth": "none", "predicates": ["Path=/orders/**"]}
    ],
}


def test_json_files_load(tmp_path):
    config = load(tmp_path, json.dumps(JSON_CONFIG, indent=2), name="gateway.json")
    assert config.routes[0].predicates == (Predicate("Path", ("/orders/**",), line=20),)
    assert config.listeners[0].line == 3


def test_json_with_tabs_and_on_one_line(tmp_path):
    text = json.dumps(JSON_CONFIG, indent="\t")
    assert load(tmp_path, text, name="gateway.json").services["orders"].line == 8
    assert load(tmp_path, json.dumps(JSON_CONFIG), name="gateway.json").routes[0].line == 1


def test_json_errors_have_lines(tmp_path):
    text = '{\n  "listeners": [\n    {"address": "127.0.0.1:0", "tsl": {}}\n  ],\n'
    text += '  "workers": 0\n}\n'
    assert errors(tmp_path, text, name="gateway.json") == [
        "3: listeners[0].tsl: unknown key (did you mean 'tls'?)",
        "5: workers: expected a whole number >= 1 or \"auto\", got 0",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{\n  "workers": 1,\n}\n', "3: Expecting property name enclosed in double quotes"),
        ('{\n  "workers": 1\n}\n{}\n', "4: Extra data"),
        ("\n\n[1, \n", "4: Expecting value"),
        ('{"workers": 1,\n "workers": 2}', "2: workers: duplicate key (first at line 1)"),
    ],
)
def test_json_syntax_errors(tmp_path, text, problem):
    assert errors(tmp_path, text, name="gateway.json") == [problem]


def test_json_takes_numbers_from_the_environment(tmp_path):
    text = '{"workers": "${WORKERS}", "listeners": [{"address": "127.0.0.1:${PORT}"}]}'
    config = load(tmp_path, text, name="gateway.json", env={"WORKERS": "3", "PORT": "81"})
    assert (config.workers, config.listeners[0].port) == (3, 81)


# --- ${VAR} ----------------------------------------------------------------------------------


def test_environment_references(tmp_path):
    config = load(tmp_path, """\
        listeners:
          - address: ${HOST:-127.0.0.1}:${PORT}
        workers: ${WORKERS}
        drain_timeout: ${DRAIN:-5s}
        limits:
          max_body: ${MAX_BODY}
        auth:
          jwt:
            providers:
              - name: shared
                issuer: ${ISSUER}
                secret: ${SECRET}
                discovery: ${DISCOVERY:-false}
    """, env={
        "PORT": "8081", "HOST": "", "WORKERS": "4", "MAX_BODY": "1MiB",
        "ISSUER": "jobs", "SECRET": "1" * 32,
    })  # fmt: skip
    assert config.listeners == (Listener("127.0.0.1", 8081, line=2),)
    assert (config.workers, config.drain_timeout, config.limits.max_body) == (4, 5.0, 1024**2)
    provider = config.auth.providers[0]
    assert (provider.issuer, provider.secret, provider.discovery) == ("jobs", "1" * 32, False)


def test_environment_defaults_to_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGW_TEST_WORKERS", "2")
    path = write(tmp_path, "workers: ${FASTGW_TEST_WORKERS}\n")
    assert load_config(path).workers == 2


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("False", False), ("yes", True), ("off", False)]
)
def test_booleans_from_the_environment(text, value):
    provider = {"name": "p", "issuer": "https://idp", "discovery": "${DISCOVERY}"}
    if not value:
        provider["jwks_uri"] = "https://idp/jwks"
    config = load_config({"auth": {"jwt": {"providers": [provider]}}}, env={"DISCOVERY": text})
    assert config.auth.providers[0].discovery is value


def test_home_in_file_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "jwks.json").write_text("{}")
    config = load_config({"auth": {"jwt": {"providers": [
        {"name": "p", "issuer": "i", "jwks_file": "~/jwks.json"},
    ]}}})  # fmt: skip
    assert config.auth.providers[0].jwks_file == str(tmp_path / "jwks.json")


def test_dollar_dollar_brace_is_a_literal(tmp_path):
    config = load(tmp_path, extended("""
        routes:
          - id: a
            uri: http://a
            filters: ["AddRequestHeader=X-Template, $${user}"]
    """))
    assert config.routes[0].filters[0].args == ("X-Template", "${user}")


def test_quoted_numbers_stay_text(tmp_path):
    assert errors(tmp_path, 'workers: "4"\n') == [
        '1: workers: expected a whole number >= 1 or "auto", got "4"'
    ]


def test_bad_references_are_all_reported(tmp_path):
    assert errors(tmp_path, """\
        listeners:
          - address: 127.0.0.1:${PORT}
        workers: ${WORKERS}
        trusted_proxies: ["${bad-name}", "${open", "${A:-${B}}"]
    """, env={"WORKERS": "many"}) == [
        "2: listeners[0].address: environment variable PORT is not set "
        "(or use ${PORT:-default})",
        '3: workers: expected a whole number >= 1 or "auto", got "many"',
        "4: trusted_proxies[0]: '${bad-name}' is not ${NAME} or ${NAME:-default}",
        "4: trusted_proxies[1]: '${' without a closing '}'",
        "4: trusted_proxies[2]: '${A:-${B}': a default cannot hold another reference",
    ]


def test_an_empty_variable_is_empty_text(tmp_path):
    assert errors(tmp_path, "audit: {path: '${LOG}'}\n", env={"LOG": ""}) == [
        "1: audit.path: must not be empty"
    ]


def test_references_in_a_dict(tmp_path):
    config = load_config({"workers": "${W}", "audit": {"path": "${LOGS}/audit.log"}},
                         env={"W": "2", "LOGS": str(tmp_path)})  # fmt: skip
    assert config.workers == 2
    assert config.audit.path == str(tmp_path / "audit.log")


# --- many problems at once -------------------------------------------------------------------


def test_every_problem_is_reported_in_file_order(tmp_path):
    assert errors(tmp_path, """\
        listner:
          - address: 1.2.3.4:80
        listeners:
          - address: "::1:80"
            tsl: {}
        workers: many
        limits:
          max_body: 10 MB
        routes:
          - id: r
            uri: lb://nowhere
    """) == [
        "1: listner: unknown key (did you mean 'listeners'?)",
        '4: listeners[0].address: "::1:80" is not HOST:PORT '
        "(an IPv6 host goes in brackets: [::1]:8080)",
        "5: listeners[0].tsl: unknown key (did you mean 'tls'?)",
        '6: workers: expected a whole number >= 1 or "auto", got "many"',
        '8: limits.max_body: "10 MB" is not a size (use bytes, KiB, MiB or GiB; '
        "did you mean 10MiB?)",
        "10: routes[0].auth: route 'r' needs auth.jwt.providers (or auth: none)",
        "11: routes[0].uri: unknown service 'nowhere'",
    ]


def test_config_error_text_and_pickling():
    error = ConfigError([("a.yaml", 3, "x: bad"), ("a.yaml", 7, "y: worse")])
    assert str(error) == "a.yaml:3: x: bad\na.yaml:7: y: worse"
    assert pickle.loads(pickle.dumps(error)).errors == error.errors


# --- dicts from Python code ------------------------------------------------------------------


def test_dicts_report_paths_without_lines():
    assert dict_errors({
        "listeners": [{"address": "nowhere"}],
        "routes": [{"id": "a", "uri": "lb://x", "auth": "none", "filters": ["Zzz="]}],
        1: "x",
        "workers": {1, 2},
    }) == [
        "top level: key 1 is not a string",
        "workers: a set is not a config value",
        'listeners[0].address: "nowhere" is not HOST:PORT '
        "(an IPv6 host goes in brackets: [::1]:8080)",
        "routes[0].uri: unknown service 'x'",
        "routes[0].filters[0]: unknown filter 'Zzz' (known: AddRequestHeader, "
        "AddRequestHeadersIfNotPresent, AddRequestParameter, AddResponseHeader, "
        "CircuitBreaker, DedupeResponseHeader, ForwardClientCert, MapRequestHeader, PrefixPath, "
        "PreserveHostHeader, RateLimit, RedirectTo, RemoveRequestHeader, "
        "RemoveRequestParameter, RemoveResponseHeader, RequestHeaderSize, RequestSize, "
        "RequireScopes, Retry, RewriteLocationResponseHeader, RewritePath, "
        "RewriteRequestParameter, RewriteResponseHeader, SecureHeaders, SetPath, "
        "SetRequestHeader, SetRequestHostHeader, SetResponseHeader, SetStatus, StripPrefix, "
        "TokenRelay)",
    ]


def test_dicts_take_tuples_and_paths(tmp_path):
    (tmp_path / "jwks.json").write_text("{}")
    config = load_config({
        "listeners": ({"address": "127.0.0.1:0"},),
        "auth": {"jwt": {"providers": [
            {"name": "p", "issuer": "i", "jwks_file": tmp_path / "jwks.json"},
        ]}},
    })  # fmt: skip
    assert config.auth.providers[0].jwks_file == str(tmp_path / "jwks.json")


def test_dict_file_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keys.json").write_text("{}")
    config = load_config({"auth": {"jwt": {"providers": [
        {"name": "p", "issuer": "i", "jwks_file": "keys.json"},
    ]}}})  # fmt: skip
    assert config.auth.providers[0].jwks_file == str(tmp_path / "keys.json")


def test_a_source_must_be_a_path_or_a_dict():
    with pytest.raises(TypeError):
        load_config(b"workers: 1")


# --- listeners and admin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:8443", "::1", 8443),
        ("[::]:80", "::", 80),
        ("gateway.internal:80", "gateway.internal", 80),
    ],
)
def test_listener_addresses(address, host, port):
    config = load_config({"listeners": [{"address": address}]})
    assert (config.listeners[0].host, config.listeners[0].port) == (host, port)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("8080", '"8080" is not HOST:PORT (an IPv6 host goes in brackets: [::1]:8080)'),
        ("::1:80", '"::1:80" is not HOST:PORT (an IPv6 host goes in brackets: [::1]:8080)'),
        ("host:99999", '"host:99999": the port must be a number from 0 to 65535'),
        ("host:http", '"host:http": the port must be a number from 0 to 65535'),
        (":8080", '":8080": "" is not a host name or IP address'),
        ("bad host:80", '"bad host:80": "bad host" is not a host name or IP address'),
        ("[1.2.3.4]:80", '"[1.2.3.4]:80": only an IPv6 address goes in brackets'),
        (8080, "expected text, got 8080"),
    ],
)
def test_bad_listener_addresses(address, message):
    assert dict_errors({"listeners": [{"address": address}]}) == [
        f"listeners[0].address: {message}"
    ]


def test_listener_shapes(tmp_path):
    assert errors(tmp_path, """\
        listeners:
          - {}
          - 127.0.0.1:80
          - address: 127.0.0.1:81
            tls: yes
    """) == [
        "2: listeners[0]: 'address' is required",
        '3: listeners[1]: expected a mapping, got "127.0.0.1:80"',
        "5: listeners[2].tls: expected a mapping, got true",
    ]


def test_at_least_one_listener(tmp_path):
    assert errors(tmp_path, "listeners: []\n") == ["1: listeners: at least one listener is needed"]
    assert errors(tmp_path, "listeners: {address: 1.2.3.4:80}\n") == [
        "1: listeners: expected a list, got a mapping"
    ]


def test_two_listeners_cannot_share_an_address(tmp_path):
    assert errors(tmp_path, """\
        listeners:
          - address: 0.0.0.0:8080
          - address: 127.0.0.1:8080
          - address: 127.0.0.1:0
          - address: 127.0.0.1:0
          - address: "[::1]:8080"
          - address: 127.0.0.1:9901
    """) == [
        "1: admin: the default address 127.0.0.1:9901 is already used by listeners[5]; "
        "set admin.address, or admin: null",
        "3: listeners[1].address: 127.0.0.1:8080 is already used by listeners[0]",
    ]


def test_admin_forms(tmp_path):
    assert load_config({"admin": None}).admin is None
    assert load_config({"admin": {}}).admin == Admin()
    assert load_config({"admin": {"address": "0.0.0.0:0"}}).admin == Admin("0.0.0.0", 0)
    assert errors(tmp_path, """\
        listeners: [{address: "0.0.0.0:9000"}]
        admin:
          address: 127.0.0.1:9000
          path: /admin
    """) == [
        "3: admin.address: 127.0.0.1:9000 is already used by listeners[0]",
        "4: admin.path: unknown key (known: address)",
    ]


def test_listener_tls(tmp_path):
    for name in ("gw.crt", "gw.key", "ca.pem"):
        (tmp_path / name).write_text("")
    config = load(tmp_path, """\
        listeners:
          - address: 0.0.0.0:8443
            tls: {cert: gw.crt, key: ./gw.key, min_version: 1.3, client_auth: optional,
                  client_ca: ca.pem}
          - address: 0.0.0.0:8444
            tls: {cert: gw.crt, key: gw.key}
    """)
    first, second = (listener.tls for listener in config.listeners)
    assert (first.cert, first.key, first.client_ca) == tuple(
        str(tmp_path / name) for name in ("gw.crt", "gw.key", "ca.pem")
    )
    assert (first.min_version, first.client_auth) == ("1.3", "optional")
    assert (second.min_version, second.client_auth, second.client_ca) == ("1.2", "none", None)


def test_bad_listener_tls(tmp_path):
    (tmp_path / "gw.crt").write_text("")
    (tmp_path / "dir").mkdir()
    assert errors(tmp_path, """\
        listeners:
          - address: 0.0.0.0:8443
            tls: {cert: gw.crt}
          - address: 0.0.0.0:8444
            tls:
              cert: missing.crt
              key: dir
              min_version: "1.1"
              client_auth: requre
          - address: 0.0.0.0:8445
            tls: {cert: gw.crt, key: gw.crt, client_auth: require}
          - address: 0.0.0.0:8446
            tls: {cert: gw.crt, key: gw.crt, client_ca: gw.crt}
    """) == [
        "3: listeners[0].tls: 'key' is required",
        f"6: listeners[1].tls.cert: no such file: {tmp_path / 'missing.crt'}",
        f"7: listeners[1].tls.key: {tmp_path / 'dir'} is a directory, not a file",
        '8: listeners[1].tls.min_version: "1.1" is not a TLS version (use "1.2" or "1.3")',
        '9: listeners[1].tls.client_auth: "requre" is not one of none, optional, require '
        "(did you mean 'require'?)",
        "11: listeners[2].tls: client_auth: require needs client_ca, the CA bundle that "
        "client certificates must chain to",
        "13: listeners[3].tls.client_ca: client_ca has no effect with client_auth: none "
        "(use optional or require)",
    ]


# --- workers, proxies, limits ------------------------------------------------------------------


def test_workers():
    assert load_config({"workers": 3}).workers == 3
    assert load_config({"workers": "auto"}).workers == (os.cpu_count() or 1)
    assert dict_errors({"workers": 0}) == ['workers: expected a whole number >= 1 or "auto", got 0']
    assert dict_errors({"workers": True}) == [
        'workers: expected a whole number >= 1 or "auto", got true'
    ]


def test_trusted_proxies():
    config = load_config({"trusted_proxies": ["10.0.0.0/8", "192.168.1.7", "10.1.2.3/16", "::1"]})
    assert config.trusted_proxies == tuple(
        ipaddress.ip_network(text)
        for text in ("10.0.0.0/8", "192.168.1.7/32", "10.1.0.0/16", "::1/128")
    )
    assert load_config({"trusted_proxies": "10.0.0.0/8"}).trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert dict_errors({"trusted_proxies": ["10.0.0.0/33", 5]}) == [
        'trusted_proxies[0]: "10.0.0.0/33" is not an IP network '
        "(a CIDR such as 10.0.0.0/8, or one address)",
        "trusted_proxies[1]: expected text, got 5",
    ]


def test_limits():
    config = load_config({"limits": {
        "max_request_line": "4KiB", "max_header_bytes": 16384, "max_headers": 50,
        "max_body": 0, "header_timeout": "500ms", "idle_timeout": 5, "max_connections": 10,
    }})  # fmt: skip
    assert config.limits == Limits(4096, 16384, 50, 0, 0.5, 5.0, 10)
    assert load_config({"drain_timeout": "0s"}).drain_timeout == 0.0


def test_bad_limits(tmp_path):
    assert errors(tmp_path, """\
        limits:
          max_request_line: 0
          max_headers: 0
          max_body: 10 MB
          header_timeout: 0s
          idle_timeout: 10 sec
          max_connections: 1.5
        drain_timeout: -1
    """) == [
        "2: limits.max_request_line: must be at least 1 bytes",
        "3: limits.max_headers: must be at least 1, got 0",
        '4: limits.max_body: "10 MB" is not a size (use bytes, KiB, MiB or GiB; '
        "did you mean 10MiB?)",
        "5: limits.header_timeout: must be longer than 0",
        '6: limits.idle_timeout: "10 sec" is not a duration (use ms, s, m, h or d, '
        "as in 250ms or 30s)",
        "7: limits.max_connections: expected a whole number, got 1.5",
        "8: drain_timeout: -1 is negative; a duration cannot be",
    ]


# --- auth -------------------------------------------------------------------------------------


def test_providers(tmp_path):
    (tmp_path / "jwks.json").write_text("{}")
    config = load(tmp_path, """\
        auth:
          jwt:
            providers:
              - name: corp
                issuer: https://idp.example.com
                discovery: true
                audiences: orders-api
                algorithms: [ES256, RS256, ES256]
                leeway: 0
                refresh_interval: 1m
              - name: static
                issuer: static
                jwks_file: jwks.json
              - name: remote
                issuer: http://127.0.0.1:8000
                jwks_uri: http://127.0.0.1:8000/jwks
              - name: shared
                issuer: jobs
                secret: 0123456789abcdef0123456789abcdef
              - name: shared-384
                issuer: jobs
                secret: 0123456789abcdef0123456789abcdef
                algorithms: [HS384, HS512]
          client_certs: {}
    """)
    corp, static, remote, shared, shared_384 = config.auth.providers
    assert corp.audiences == ("orders-api",)
    assert corp.algorithms == ("ES256", "RS256")
    assert (corp.leeway, corp.refresh_interval, corp.line) == (0.0, 60.0, 4)
    assert static.jwks_file == str(tmp_path / "jwks.json")
    assert static.algorithms == ("RS256",)
    assert remote.jwks_uri == "http://127.0.0.1:8000/jwks"
    assert shared.algorithms == ("HS256",)
    assert shared_384.algorithms == ("HS384", "HS512")
    assert config.auth.client_cert_subject_from == "san_uri"


def test_bad_providers(tmp_path):
    assert errors(tmp_path, """\
        auth:
          jwt:
            providers:
              - name: a
                issuer: idp
              - name: a
                issuer: not a url
                discovery: true
                jwks_uri: https://idp/jwks
                algorithms: [none, rs256, HS256, RS999]
              - name: h
                issuer: h
                secret: short
                algorithms: RS256
              - issuer: x
                jwks_file: missing.json
                audiences: []
                leeway: 5 s
                refresh_interval: 0s
              - name: u
                issuer: u
                jwks_uri: ftp://keys
                algorithms: []
                discovery: maybe
          client_certs: {subject_from: san}
    """) == [
        "4: auth.jwt.providers[0]: needs one key source: discovery: true, jwks_uri, "
        "jwks_file or secret",
        "6: auth.jwt.providers[1].name: provider 'a' is already defined at auth.jwt.providers[0]",
        "7: auth.jwt.providers[1].issuer: discovery needs an http:// or https:// issuer",
        "9: auth.jwt.providers[1].jwks_uri: discovery and jwks_uri are both set; "
        "a provider has exactly one key source",
        "10: auth.jwt.providers[1].algorithms[0]: 'none' can never be allowed: "
        "an unsigned token proves nothing",
        "10: auth.jwt.providers[1].algorithms[1]: unknown algorithm 'rs256' "
        "(did you mean 'RS256'?)",
        "10: auth.jwt.providers[1].algorithms[2]: HS256 needs secret "
        "(HMAC keys never come from a JWKS)",
        "10: auth.jwt.providers[1].algorithms[3]: unknown algorithm 'RS999' (known: RS256, "
        "RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512)",
        "13: auth.jwt.providers[2].secret: must be at least 32 bytes; this one has 5",
        "14: auth.jwt.providers[2].algorithms[0]: RS256 cannot go with secret: "
        "a provider with a secret allows only HS256, HS384, HS512",
        "15: auth.jwt.providers[3]: 'name' is required",
        f"16: auth.jwt.providers[3].jwks_file: no such file: {tmp_path / 'missing.json'}",
        '18: auth.jwt.providers[3].leeway: "5 s" is not a duration '
        "(use ms, s, m, h or d, as in 250ms or 30s)",
        "19: auth.jwt.providers[3].refresh_interval: must be longer than 0",
        '22: auth.jwt.providers[4].jwks_uri: "ftp://keys" is not an http:// or https:// URL',
        "23: auth.jwt.providers[4].algorithms: list at least one algorithm",
        '24: auth.jwt.providers[4].discovery: expected true or false, got "maybe"',
        '25: auth.client_certs.subject_from: "san" is not one of san_uri, san_dns, cn '
        "(did you mean 'san_uri'?)",
    ]


def test_a_secret_never_shows_in_messages():
    problems = dict_errors({"auth": {"jwt": {"providers": [
        {"name": "p", "issuer": "i", "secret": "hunter2", "algorithms": ["RS256"]},
    ]}}})  # fmt: skip
    assert not any("hunter2" in problem for problem in problems)


# --- services ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "instance"),
    [
        ("http://127.0.0.1:9001", Instance("http", "127.0.0.1", 9001)),
        ("http://orders", Instance("http", "orders", 80)),
        ("https://orders", Instance("https", "orders", 443)),
        ("https://Orders.Internal:8443/", Instance("https", "orders.internal", 8443)),
        ("HTTP://orders:81", Instance("http", "orders", 81)),
        ("http://[::1]", Instance("http", "::1", 80)),
        ("https://[::1]:9443", Instance("https", "::1", 9443)),
    ],
)
def test_instances(url, instance):
    config = load_config({"services": {"s": {"instances": [url]}}})
    assert config.services["s"].instances == (instance,)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", '"ftp://x" is not http://HOST:PORT or https://HOST:PORT'),
        ("127.0.0.1:80", '"127.0.0.1:80" is not http://HOST:PORT or https://HOST:PORT'),
        ("http://a:1/api", '"http://a:1/api": an instance URL has no path, query or fragment '
                           "(rewrite paths with filters)"),
        ("http://a:1?x=1", '"http://a:1?x=1": an instance URL has no path, query or fragment '
                           "(rewrite paths with filters)"),
        ("http://u:p@a:1", '"http://u:p@a:1": an instance URL carries no user name or password'),
        ("http://a:99999", '"http://a:99999": the port must be a number from 0 to 65535'),
        ("http://a b", '"http://a b": "a b" is not a host name or IP address'),
    ],
)  # fmt: skip
def test_bad_instances(url, message):
    assert dict_errors({"services": {"s": {"instances": [url]}}}) == [
        f"services.s.instances[0]: {message}"
    ]


def test_services(tmp_path):
    for name in ("ca.pem", "client.crt", "client.key"):
        (tmp_path / name).write_text("")
    config = load(tmp_path, """\
        services:
          orders:
            instances: [http://a:1, https://b:2]
            balancer: least_requests
            connect_timeout: 500ms
            response_timeout: 1m
            max_connections: 8
            retries: 0
            health_check: {path: /ready, interval: 1s, unhealthy_after: 1, healthy_after: 5}
            tls: {ca: ca.pem, cert: client.crt, key: client.key, server_name: orders.internal}
          plain:
            instances: http://p
            health_check: {}
    """)
    orders = config.services["orders"]
    assert (orders.balancer, orders.connect_timeout, orders.response_timeout) == (
        "least_requests", 0.5, 60.0
    )
    assert (orders.max_connections, orders.retries) == (8, 0)
    assert orders.health_check == HealthCheck("/ready", 1.0, 1, 5)
    assert orders.tls.ca == str(tmp_path / "ca.pem")
    assert orders.tls.server_name == "orders.internal"
    assert config.services["plain"].health_check == HealthCheck()
    assert config.services["plain"].tls is None


def test_bad_services(tmp_path):
    (tmp_path / "c.crt").write_text("")
    assert errors(tmp_path, """\
        services:
          orders:
            instances: []
          "bad name": {instances: http://x}
          svc:
            instances: [http://c, "http://c:80"]
            balancer: roundrobin
            retries: -1
            max_connections: 0
            health_check: {path: healthz, interval: 0s, extra: 1}
            tls: {cert: c.crt, server_name: "bad name"}
            timeout: 1s
          plain:
            instances: http://p:1
            tls: {}
          nothing:
          listed: [http://x]
    """) == [
        "3: services.orders.instances: at least one instance is needed",
        '4: services["bad name"]: "bad name" is not a service name (letters, digits, . _ -)',
        "6: services.svc.instances[1]: http://c:80 is listed twice",
        '7: services.svc.balancer: "roundrobin" is not one of round_robin, least_requests, '
        "random (did you mean 'round_robin'?)",
        "8: services.svc.retries: must be at least 0, got -1",
        "9: services.svc.max_connections: must be at least 1, got 0",
        "10: services.svc.health_check.extra: unknown key (known: path, interval, "
        "unhealthy_after, healthy_after)",
        '10: services.svc.health_check.path: "healthz" is not a request path (it starts with /)',
        "10: services.svc.health_check.interval: must be longer than 0",
        "11: services.svc.tls.cert: needs key: a client certificate goes with its private key",
        '11: services.svc.tls.server_name: "bad name" is not a host name',
        "11: services.svc.tls: tls is for https:// instances, and every instance is http://",
        "12: services.svc.timeout: unknown key (did you mean 'connect_timeout'?)",
        "15: services.plain.tls: tls is for https:// instances, and every instance is http://",
        "16: services.nothing: expected a mapping, got null",
        "17: services.listed: expected a mapping, got a list",
    ]


def test_service_outlier_detection_and_pending_queue(tmp_path):
    config = load(tmp_path, """\
        services:
          orders:
            instances: http://a:1
            max_pending: 0
            outlier:
              consecutive_failures: 3
              base_ejection: 500ms
              max_ejection: 10s
              max_ejected_percent: 100
              panic_threshold: 0
              count_5xx: true
          plain:
            instances: http://p:1
          moving:
            instances: ["dns://Orders.Internal:8080", "dns://orders.internal", http://10.0.0.1]
            resolve_interval: 30s
    """)
    moving = config.services["moving"]
    assert moving.instances == (Instance("http", "orders.internal", 8080, dns=True),
                                Instance("http", "orders.internal", 80, dns=True),
                                Instance("http", "10.0.0.1", 80))
    assert [i.url for i in moving.instances[:2]] == ["dns://orders.internal:8080",
                                                     "dns://orders.internal:80"]
    assert (moving.resolve_interval, config.services["plain"].resolve_interval) == (30.0, 5.0)
    orders = config.services["orders"]
    assert orders.max_pending == 0
    assert orders.outlier == Outlier(3, 0.5, 10.0, 100, 0, True)
    plain = config.services["plain"]
    assert (plain.max_pending, plain.outlier) == (1024, Outlier())
    assert Outlier() == Outlier(5, 5.0, 60.0, 50, 50, False)


def test_bad_outlier_settings(tmp_path):
    assert errors(tmp_path, """\
        services:
          a:
            instances: http://a:1
            max_pending: -1
            outlier:
              consecutive_failures: 0
              base_ejection: 0s
              max_ejected_percent: 101
              panic_threshold: half
              count_5xx: sometimes
              ejection: 5s
          b:
            instances: http://b:1
            outlier: {base_ejection: 10s, max_ejection: 5s}
          c:
            instances: http://c:1
            outlier: {base_ejection: 2m}
          d:
            instances: http://d:1
            outlier: on
          e:
            instances: ["dns://10.0.0.1:80", "dns://a/path", "dns://"]
            resolve_interval: 0s
    """) == [
        "4: services.a.max_pending: must be at least 0, got -1",
        "6: services.a.outlier.consecutive_failures: must be at least 1, got 0",
        "7: services.a.outlier.base_ejection: must be longer than 0",
        "8: services.a.outlier.max_ejected_percent: must be a percentage from 0 to 100, got 101",
        '9: services.a.outlier.panic_threshold: expected a whole number, got "half"',
        '10: services.a.outlier.count_5xx: expected true or false, got "sometimes"',
        "11: services.a.outlier.ejection: unknown key (did you mean 'max_ejection'?)",
        "14: services.b.outlier.max_ejection: must not be shorter than base_ejection",
        "17: services.c.outlier.base_ejection: must not be longer than max_ejection "
        "(60s by default)",
        "20: services.d.outlier: expected a mapping, got true",
        '22: services.e.instances[0]: "dns://10.0.0.1:80": dns:// takes a host name to '
        'resolve; list an address as http://',
        '22: services.e.instances[1]: "dns://a/path": an instance URL has no path, query or '
        'fragment (rewrite paths with filters)',
        '22: services.e.instances[2]: "dns://": "" is not a host name or IP address',
        "23: services.e.resolve_interval: must be longer than 0",
    ]


# --- rate limits, redis, logs -------------------------------------------------------------------


def test_rate_limits(tmp_path):
    config = load(tmp_path, """\
        rate_limits:
          per-client: {rate: 1000/min, key: jwt.sub}
          per-tenant: {rate: 50/s, burst: 10, key: jwt.claim.tenant_id, store: redis}
          per-key: {rate: 5/s, key: header.X-Api-Key}
          per-cert: {rate: 5/s, key: mtls.subject}
          per-ip: {rate: 1000000/day, key: ip}
        redis: {url: "rediss://:pw@cache:6380/2", on_error: deny, timeout: 20ms}
    """)
    limits = config.rate_limits
    assert limits["per-client"] == RateLimit(
        "per-client", Rate(1000, 60.0, "1000/min"), 1000, "jwt.sub", "local", line=2
    )
    assert (limits["per-tenant"].burst, limits["per-tenant"].store) == (10, "redis")
    assert limits["per-tenant"].key == "jwt.claim.tenant_id"
    assert limits["per-key"].key == "header.x-api-key"
    assert limits["per-ip"].rate.period == 86400.0
    assert (config.redis.url, config.redis.on_error, config.redis.timeout) == (
        "rediss://:pw@cache:6380/2", "deny", 0.02
    )


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://cache", "rediss://user:pw@cache:6380",
     "redis+cluster://a:7000,b:7001,c", "rediss+cluster://a:7000,b", "redis://[::1]:6379/1"],
)  # fmt: skip
def test_redis_urls(url):
    assert load_config({"redis": {"url": url}}).redis.url == url


def test_bad_rate_limits_and_redis(tmp_path):
    assert errors(tmp_path, """\
        rate_limits:
          r1: {rate: 0/s, key: jwt.sub}
          r2: {rate: 10/m, key: cookie.x}
          r3: {rate: 5/s, key: header.X-Api-Key, burst: 0}
          r4: {key: ip}
          r5: {rate: 5/s, store: redis}
          r6: {rate: 5/s, key: "jwt.claim."}
    """) == [
        '2: rate_limits.r1.rate: "0/s": a rate allows at least 1 request',
        '3: rate_limits.r2.rate: "10/m" is ambiguous: write /min for a minute',
        '3: rate_limits.r2.key: "cookie.x" is not a limit key '
        "(ip, jwt.sub, jwt.claim.NAME, header.NAME or mtls.subject)",
        "4: rate_limits.r3.burst: must be at least 1, got 0",
        "5: rate_limits.r4: 'rate' is required",
        "6: rate_limits.r5: 'key' is required",
        "6: rate_limits.r5.store: store: redis needs a top-level redis: section",
        '7: rate_limits.r6.key: "jwt.claim." is not a limit key '
        "(ip, jwt.sub, jwt.claim.NAME, header.NAME or mtls.subject)",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:secret@cache",
         "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"),
        ("redis://:secret@", "names no host"),
        ("redis://:secret@cache:99999", '"cache:99999": the port must be a number from 0 to 65535'),
        ("redis://:secret@cache/db", 'the database after the host must be a number, not "db"'),
        ("redis+cluster://a:1,,b", "names no host"),
    ],
)
def test_bad_redis_urls_do_not_show_the_password(url, message):
    assert dict_errors({"redis": {"url": url}}) == [f"redis.url: {message}"]


def test_redis_tls(tmp_path):
    for name in ("ca.crt", "gw.crt", "gw.key"):
        (tmp_path / name).write_text("x")
    config = load(tmp_path, """\
        redis:
          url: rediss+cluster://a:7000,b:7001
          tls: {ca: ca.crt, cert: gw.crt, key: gw.key, server_name: redis.internal}
    """)
    assert config.redis.tls == ServiceTLS(
        str(tmp_path / "ca.crt"), str(tmp_path / "gw.crt"), str(tmp_path / "gw.key"),
        "redis.internal",
    )
    assert errors(tmp_path, """\
        redis:
          url: redis://cache
          tls: {ca: ca.crt, cert: gw.crt}
    """) == [
        "3: redis.tls.cert: needs key: a client certificate goes with its private key",
        "3: redis.tls: needs a rediss:// or rediss+cluster:// url",
    ]


def test_redis_settings():
    assert dict_errors({"redis": {"on_error": "fail", "timeout": "0ms", "db": 1}}) == [
        "redis.db: unknown key (known: url, on_error, timeout, tls)",
        'redis.on_error: "fail" is not one of local, allow, deny',
        "redis.timeout: must be longer than 0",
    ]


def test_log_targets(tmp_path):
    config = load(tmp_path, "audit: {path: logs/audit.log}\naccess_log: {path: '-'}\n")
    assert config.audit.path == str(tmp_path / "logs" / "audit.log")
    assert config.access_log.path == "-"
    assert errors(tmp_path, "audit: {}\naccess_log: {path: ''}\n") == [
        "1: audit: 'path' is required",
        "2: access_log.path: must not be empty",
    ]


# --- routes -----------------------------------------------------------------------------------


def test_routes_to_services_and_direct_urls(tmp_path):
    config = load(tmp_path, extended("""
        services:
          orders: {instances: http://orders}
        routes:
          - id: orders
            uri: lb://orders
          - id: health
            uri: http://127.0.0.1:9001
            auth: none
          - id: health-again
            uri: http://127.0.0.1:9001/
            auth: none
          - id: secure
            uri: https://api.example.com
    """))
    orders, health, again, secure = config.routes
    assert (orders.uri, orders.service, orders.auth, orders.line) == (
        "lb://orders", "orders", "jwt", BASE_LINES + 4
    )
    assert (health.service, again.service) == ("http://127.0.0.1:9001",) * 2
    assert config.services["http://127.0.0.1:9001"] == Service(
        "http://127.0.0.1:9001", (Instance("http", "127.0.0.1", 9001),), line=BASE_LINES + 7
    )
    assert secure.service == "https://api.example.com:443"
    assert list(config.services) == [
        "orders", "http://127.0.0.1:9001", "https://api.example.com:443"
    ]


def test_bad_routes(tmp_path):
    assert errors(tmp_path, extended("""
        services:
          orders: {instances: http://orders}
        routes:
          - id: a
            uri: lb://order
            order: 1
          - id: a
            uri: ftp://x
          - uri: http://h:1/x
          - id: ""
            uri: lb://orders
            auth: anonymous
    """)) == [
        f"{BASE_LINES + 5}: routes[0].uri: unknown service 'order' (did you mean 'orders'?)",
        f"{BASE_LINES + 6}: routes[0].order: unknown key (known: id, uri, predicates, auth, "
        "filters, metadata)",
        f"{BASE_LINES + 7}: routes[1].id: route 'a' is already defined at routes[0]",
        f'{BASE_LINES + 8}: routes[1].uri: "ftp://x" is not lb://SERVICE, http://HOST:PORT '
        "or https://HOST:PORT",
        f"{BASE_LINES + 9}: routes[2]: 'id' is required",
        f'{BASE_LINES + 9}: routes[2].uri: "http://h:1/x": an instance URL has no path, '
        "query or fragment (rewrite paths with filters)",
        f"{BASE_LINES + 10}: routes[3].id: must not be empty",
        f'{BASE_LINES + 12}: routes[3].auth: "anonymous" is not one of jwt, mtls, '
        "jwt_or_mtls, none",
    ]


def test_a_bad_auth_mode_is_reported_once():
    assert dict_errors({"routes": [{"id": "r", "uri": "http://a", "auth": "nobody"}]}) == [
        'routes[0].auth: "nobody" is not one of jwt, mtls, jwt_or_mtls, none'
    ]


def test_routes_must_be_a_list():
    assert dict_errors({"routes": {"id": "a"}}) == ["routes: expected a list, got a mapping"]


# --- predicates --------------------------------------------------------------------------------


def route_with(kind: str, items: list) -> dict:
    return {"routes": [{"id": "r", "uri": "http://a", "auth": "none", kind: items}]}


def test_predicate_forms():
    config = load_config(route_with("predicates", [
        "Path=/orders/**, /order/{id}",
        "Method=get,POST",
        "Host=*.Example.com",
        r"Header=X-Id, \d{1,3}",
        "Header=X-Present",
    ]))  # fmt: skip
    assert [(p.kind, p.args) for p in config.routes[0].predicates] == [
        ("Path", ("/orders/**", "/order/{id}")),
        ("Method", ("GET", "POST")),
        ("Host", ("*.example.com",)),
        ("Header", ("X-Id", r"\d{1,3}")),
        ("Header", ("X-Present",)),
    ]


def test_expanded_predicate_forms():
    config = load_config(route_with("predicates", [
        {"name": "Path", "args": {"patterns": ["/a/**", "/b"]}},
        {"name": "Header", "args": {"regexp": "(?<tenant>[a-z]+)", "header": "X-Tenant"}},
        {"name": "Method", "args": ["GET"]},
        {"name": "Host", "args": "api.example.com"},
    ]))  # fmt: skip
    assert [(p.kind, p.args) for p in config.routes[0].predicates] == [
        ("Path", ("/a/**", "/b")),
        ("Header", ("X-Tenant", "(?P<tenant>[a-z]+)")),
        ("Method", ("GET",)),
        ("Host", ("api.example.com",)),
    ]


def test_predicate_lines(tmp_path):
    config = load(tmp_path, """\
        routes:
          - id: r
            uri: http://a
            auth: none
            predicates:
              - Path=/a
              - name: Method
                args: {methods: GET}
    """)
    assert [p.line for p in config.routes[0].predicates] == [6, 7]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("Paht=/x", "unknown predicate 'Paht' (did you mean 'Path'?)"),
        ("Cokie=a, b", "unknown predicate 'Cokie' (did you mean 'Cookie'?)"),
        ("Zzz=a", "unknown predicate 'Zzz' (known: Path, After, Before, Between, Cookie, "
                  "Query, RemoteAddr, XForwardedRemoteAddr, Weight, Method, Host, Header)"),
        ("After=2017-01-20", '"2017-01-20" has no offset or zone (write -07:00 or [Region/City])'),
        ("After=2017-01-20T17:42:47-07:00[Mars/Base]",
         '"2017-01-20T17:42:47-07:00[Mars/Base]": unknown time zone \'Mars/Base\''),
        ("Between=2017-01-21T00:00Z, 2017-01-20T00:00Z",
         "Between: the first date-time must come before the second"),
        ("RemoteAddr=10.0.0.0/33", '"10.0.0.0/33" is not an address or CIDR like 192.168.0.1/16'),
        ("Weight=group1", "Weight takes GROUP, WEIGHT (a whole number)"),
        ("Cookie=a", "Cookie takes NAME, REGEXP"),
        ("Path=", "Path needs at least one pattern"),
        ("Path=a/b", "path pattern 'a/b' must start with '/'"),
        ("Method=PO ST", 'Method: "PO ST" is not a method name'),
        ("Host=a..b", "host pattern 'a..b': empty label"),
        ("Header=Bad Name, x", 'Header: "Bad Name" is not a header name'),
        ("Header=X, (", "header regex '(': invalid regex: missing ), unterminated subpattern "
                        "at position 0"),
        ("Header=X, (a+)+", "header regex '(a+)+' nests an unbounded repeat inside another, "
                            "which can backtrack without end; make one possessive (*+, ++) "
                            "or atomic (?>...)"),
        ("/orders/**", '"/orders/**" is not NAME=ARGS or NAME'),
        ("Path=#{@paths}", '"Path=#{@paths}" holds a SpEL expression (#{...}), which needs a JVM'),
        (42, "expected NAME=ARGS or {name: NAME, args: ...}, got 42"),
        ({"args": {}}, "'name' is required"),
        ({"name": "Path", "args": {"pattern": "/x"}},
         "Path has no argument 'pattern' (arguments: patterns, matchTrailingSlash)"),
        ({"name": "Path", "args": {"patterns": [{"a": 1}]}},
         "an argument must be text or a number, not a mapping"),
    ],
)  # fmt: skip
def test_bad_predicates(item, message):
    [problem] = dict_errors(route_with("predicates", [item]))
    assert problem.split(": ", 1)[1] == message


def test_one_path_and_one_host_predicate_per_route():
    assert dict_errors(route_with("predicates", [
        "Path=/a", "Host=a.example", "Method=GET", "Path=/b", "Host=b.example", "Method=POST",
    ])) == [
        "routes[0].predicates[3]: a route takes one Path predicate, and routes[0].predicates[0] "
        "is one; list every pattern in it (Path=A, B)",
        "routes[0].predicates[4]: a route takes one Host predicate, and routes[0].predicates[1] "
        "is one; list every pattern in it (Host=A, B)",
    ]  # fmt: skip


def test_an_expanded_predicate_has_name_and_args():
    assert dict_errors(route_with("predicates", [{"name": "Path", "arguments": ["/x"]}])) == [
        "routes[0].predicates[0].arguments: unknown key (did you mean 'args'?)",
        "routes[0].predicates[0]: Path needs at least one pattern",
    ]


def test_an_unset_variable_in_args_is_reported_once():
    assert dict_errors(route_with("predicates", [{"name": "Path", "args": ["${P}"]}])) == [
        "routes[0].predicates[0].args[0]: environment variable P is not set "
        "(or use ${P:-default})"
    ]


# --- filters -----------------------------------------------------------------------------------


def test_filter_forms():
    config = load_config({
        "rate_limits": {"per-ip": {"rate": "5/s", "key": "ip"}},
        **route_with("filters", [
            "StripPrefix=1",
            "TokenRelay=",
            "RateLimit=per-ip",
            "AddRequestHeader=X-List, a, b , c",
            "AddResponseHeader=X-Frame-Options,DENY",
            "SetRequestHeader=X-Env, prod",
            "RemoveRequestHeader=Cookie",
            {"name": "StripPrefix", "args": {"parts": 2}},
            {"name": "AddRequestHeader", "args": {"value": "v", "name": "X-N"}},
            {"name": "TokenRelay"},
        ]),
    })  # fmt: skip
    assert [(f.name, f.args) for f in config.routes[0].filters] == [
        ("StripPrefix", ("1",)),
        ("TokenRelay", ()),
        ("RateLimit", ("per-ip",)),
        ("AddRequestHeader", ("X-List", "a, b , c")),
        ("AddResponseHeader", ("X-Frame-Options", "DENY")),
        ("SetRequestHeader", ("X-Env", "prod")),
        ("RemoveRequestHeader", ("Cookie",)),
        ("StripPrefix", ("2",)),
        ("AddRequestHeader", ("X-N", "v")),
        ("TokenRelay", ()),
    ]


@pytest.mark.parametrize(
    ("rewrite", "args"),
    [
        (r"RewritePath=/red/?(?<segment>.*), /$\{segment}",
         ("/red/?(?P<segment>.*)", r"/\g<segment>")),
        ("RewritePath=/api/(.*)/(.*), /$2/$1", ("/api/(.*)/(.*)", r"/\g<2>/\g<1>")),
        ("RewritePath=/(.*), /$12", ("/(.*)", r"/\g<1>2")),
        (r"RewritePath=/(.*), /\$1\\x", ("/(.*)", r"/$1\\x")),
        ("RewritePath=/(?P<p>.*), /v2/$0", ("/(?P<p>.*)", r"/v2/\g<0>")),
        ({"name": "RewritePath", "args": {"regexp": "/a/(?<rest>.*)", "replacement": r"/$\{rest}"}},
         ("/a/(?P<rest>.*)", r"/\g<rest>")),
    ],
)  # fmt: skip
def test_rewrite_path_is_translated_to_python(rewrite, args):
    [spec] = load_config(route_with("filters", [rewrite])).routes[0].filters
    assert spec.args == args


def test_rewrite_path_in_yaml(tmp_path):
    config = load(tmp_path, extended(r"""
        routes:
          - id: r
            uri: http://a
            filters:
              - RewritePath=/red/?(?<segment>.*), /$\{segment}
              - RewritePath=/blue/(?<segment>.*), /$${segment}
    """))
    assert [f.args for f in config.routes[0].filters] == [
        ("/red/?(?P<segment>.*)", r"/\g<segment>"),
        ("/blue/(?P<segment>.*)", r"/\g<segment>"),
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("AddReqestHeader=a, b", "unknown filter 'AddReqestHeader' (did you mean "
                                 "'AddRequestHeader'?)"),
        ("ModifyRequestBody", "ModifyRequestBody is not available: it runs a Java "
                              "RewriteFunction on the body (a Python filter can)"),
        ("ModifyResponseBody", "ModifyResponseBody is not available: it runs a Java "
                               "RewriteFunction on the body (a Python filter can)"),
        ("JsonToGrpc=a, b", "JsonToGrpc is not available: it needs Java protobuf descriptors"),
        ("SaveSession", "SaveSession is not available: there is no Spring WebSession in fastgw"),
        ("CacheRequestBody", "CacheRequestBody is not available: it keeps the body for Java "
                             "code later in the chain"),
        ("SetStatus=NOPE", "SetStatus: 'NOPE' is not a status code here"),
        ("RedirectTo=200, /x", "RedirectTo: '200' is not a status code here"),
        ("RequestSize=5 parsecs", "RequestSize: '5 parsecs' is not a size like 5000000 or 5MB"),
        ("DedupeResponseHeader=X-A, RETAIN_SOME", "DedupeResponseHeader: strategy is one of "
                                                 "RETAIN_FIRST, RETAIN_LAST, RETAIN_UNIQUE"),
        ("PreserveHostHeader=x", "PreserveHostHeader takes no argument"),
        ("CircuitBreaker=cb, /fallback", "CircuitBreaker: fallbackUri is forward:/PATH, not "
                                         "'/fallback' (only forward: is available)"),
        ({"name": "CircuitBreaker", "args": {"slidingWindowSize": 0}},
         "CircuitBreaker: slidingWindowSize is a whole number from 1 to 100000"),
        ({"name": "CircuitBreaker", "args": {"status-codes": ["TEAPOT"]}},
         "CircuitBreaker: 'TEAPOT' is not a status code here"),
        ({"name": "CircuitBreaker", "args": {"resilience4jConfig": "x"}},
         "CircuitBreaker has no argument 'resilience4jConfig' (arguments: name, fallbackUri, "
         "statusCodes, failureRateThreshold, slidingWindowSize, minimumNumberOfCalls, "
         "waitDurationInOpenState, permittedNumberOfCallsInHalfOpenState)"),
        ("Retry=3, BAD_GATEWAY, POST", "Retry: POST is not idempotent, and is never sent twice"),
        ("Retry=3, BAD_GATEWAY, GET, soon", 'Retry: backoff.firstBackoff: "soon" is not a '
         "duration (use ms, s, m, h or d, as in 250ms or 30s)"),
        ("Retry=3, BAD_GATEWAY, GET, 10ms, 5ms", "Retry: backoff.maxBackoff is shorter than "
                                                 "firstBackoff"),
        ("Retry=3, BAD_GATEWAY, GET, 10ms, 50ms, 0.5", "Retry: backoff.factor is a number from "
                                                       "1 to 100, not '0.5'"),
        ("Retry=3, BAD_GATEWAY, GET, 10ms, 50ms, 2, maybe", "Retry: backoff.basedOnPreviousValue "
                                                            "is true or false, not 'maybe'"),
        ("Retry=3, BAD_GATEWAY, GET, 2m", "Retry: backoff.firstBackoff is 2m, more than 60s"),
        ({"name": "Retry", "args": {"backoff": {"first": "10ms"}}},
         "Retry: backoff has no argument 'first' (arguments: firstBackoff, maxBackoff, factor, "
         "basedOnPreviousValue)"),
        ({"name": "Retry", "args": {"backoff": "10ms"}},
         "Retry: backoff is a mapping of firstBackoff, maxBackoff, factor, basedOnPreviousValue"),
        ({"name": "Retry", "args": {"exceptions": "java.io.IOException"}},
         "Retry: exceptions names Java exception classes; connection failures and timeouts "
         "are retried as they are"),
        ({"name": "Retry", "args": {"series": "SERVER_ERRORS"}},
         "Retry: 'SERVER_ERRORS' is not one of INFORMATIONAL, SUCCESSFUL, REDIRECTION, "
         "CLIENT_ERROR, SERVER_ERROR"),
        ("SetRequestHostHeader=a b", "SetRequestHostHeader takes one host name, not 'a b'"),
        ("RequireScopes=", "RequireScopes needs at least one scope"),
        ("RequireScopes=read orders", 'RequireScopes: "read orders" is not one scope '
                                      "(separate scopes with commas)"),
        ("RateLimit=per-i", "unknown rate limit 'per-i' (did you mean 'per-ip'?)"),
        ("RateLimit=", "RateLimit takes the names of one or more rate limits"),
        ("StripPrefix=x", "StripPrefix takes one whole number >= 0 (path segments to drop)"),
        ("StripPrefix=-1", "StripPrefix takes one whole number >= 0 (path segments to drop)"),
        ("TokenRelay=yes", "TokenRelay takes no argument"),
        ("AddRequestHeader=X-A", "AddRequestHeader takes NAME, VALUE"),
        ("RemoveRequestHeader=Connection", "RemoveRequestHeader: the gateway owns the "
                                           "Connection header"),
        ("RewritePath=/a", "RewritePath takes REGEX, REPLACEMENT"),
        ("RewriteRequestParameter=campaign", "RewriteRequestParameter takes NAME, REPLACEMENT"),
        ({"name": "RewriteRequestParameter", "args": {"name": "campaign", "value": "x"}},
         "RewriteRequestParameter has no argument 'value' (arguments: name, replacement)"),
        ("RewriteLocationResponseHeader=SOMETIMES", "RewriteLocationResponseHeader: "
         "stripVersionMode is one of NEVER_STRIP, AS_IN_REQUEST, ALWAYS_STRIP, not 'SOMETIMES'"),
        ("RewriteLocationResponseHeader=AS_IN_REQUEST, Location, , http(", "RewriteLocation"
         "ResponseHeader: protocolsRegex 'http(': missing ), unterminated subpattern at "
         "position 4"),
        ({"name": "RewriteLocationResponseHeader", "args": {"mode": "NEVER_STRIP"}},
         "RewriteLocationResponseHeader has no argument 'mode' (arguments: stripVersionMode, "
         "locationHeaderName, hostValue, protocolsRegex)"),
        ("RewriteLocationResponseHeader=NEVER_STRIP, Connection", "RewriteLocationResponse"
         "Header: the gateway owns the Connection header"),
        ("RewritePath=/a/(, /", '"/a/(" is not a valid regex: missing ), unterminated '
                                "subpattern at position 3"),
        (r"RewritePath=/a/(?<s>.*), /$\{t}", "replacement \"/${t}\": the regex has no group "
                                              "named 't'"),
        ("RewritePath=/a/(.*), /$2", 'replacement "/$2": the regex has no group 2'),
        ("RewritePath=/a/(.*), /$", "replacement \"/$\": a lone '$' (write \\$ for a dollar "
                                    "sign)"),
        ("RewritePath=/a/(.*), /\\", "replacement \"/\\\\\": it ends with a lone backslash"),
        ({"name": "StripPrefix", "args": {"count": 1}},
         "StripPrefix has no argument 'count' (arguments: parts)"),
        ({"name": "StripPrefix", "args": {"parts": [{"n": 1}]}},
         "an argument must be text or a number, not a mapping"),
    ],
)  # fmt: skip
def test_bad_filters(item, message):
    config = {"rate_limits": {"per-ip": {"rate": "5/s", "key": "ip"}}}
    [problem] = dict_errors({**config, **route_with("filters", [item])})
    where = "routes[0].filters[0]"
    assert problem in (f"{where}: {message}", f"{where}.args: {message}")


def test_user_filters_come_from_the_registry():
    from fastgw.filters import FILTERS, filter

    @filter("AddTenantForConfigTest")
    def add_tenant(request, arg):
        pass

    try:
        config = load_config(route_with("filters", ["AddTenantForConfigTest=acme"]))
        assert config.routes[0].filters[0].args == ("acme",)
    finally:
        del FILTERS["AddTenantForConfigTest"]


# --- what routes need from the rest of the config -----------------------------------------------


def test_token_routes_need_providers(tmp_path):
    assert errors(tmp_path, """\
        routes:
          - id: orders
            uri: http://a
          - id: both
            uri: http://a
            auth: jwt_or_mtls
          - uri: http://a
            auth: jwt
    """) == [
        "2: routes[0].auth: route 'orders' needs auth.jwt.providers (or auth: none)",
        "6: routes[1].auth: route 'both' needs auth.jwt.providers (or auth: none)",
        "6: routes[1].auth: route 'both' needs a listener with tls.client_auth: optional "
        "or require",
        "7: routes[2]: 'id' is required",
        "8: routes[2].auth: this route needs auth.jwt.providers (or auth: none)",
    ]


def test_mtls_routes_need_a_listener_asking_for_certificates(tmp_path):
    for name in ("gw.crt", "gw.key", "ca.pem"):
        (tmp_path / name).write_text("")
    listener = """\
        listeners:
          - address: 0.0.0.0:8443
            tls: {cert: gw.crt, key: gw.key, client_auth: %s, client_ca: ca.pem}
        routes:
          - id: internal
            uri: http://a
            auth: mtls
    """
    assert load(tmp_path, listener % "optional").routes[0].auth == "mtls"
    assert errors(tmp_path, (listener % "none").replace(", client_ca: ca.pem", "")) == [
        "7: routes[0].auth: route 'internal' needs a listener with tls.client_auth: optional "
        "or require"
    ]


def test_policy_filters_must_fit_the_route_auth(tmp_path):
    assert errors(tmp_path, extended("""
        rate_limits:
          by-sub: {rate: 5/s, key: jwt.sub}
          by-claim: {rate: 5/s, key: jwt.claim.tenant}
          by-cert: {rate: 5/s, key: mtls.subject}
          by-ip: {rate: 5/s, key: ip}
        routes:
          - id: public
            uri: http://a
            auth: none
            filters: [RequireScopes=a, RateLimit=by-sub, RateLimit=by-claim, RateLimit=by-cert,
                      RateLimit=by-ip]
          - id: token
            uri: http://a
            filters: [RequireScopes=a, RateLimit=by-sub, RateLimit=by-cert]
    """)) == [
        f"{BASE_LINES + 10}: routes[0].filters[0]: RequireScopes needs a token, and route "
        "'public' has auth: none",
        f"{BASE_LINES + 10}: routes[0].filters[1]: rate limit 'by-sub' is keyed by jwt.sub, "
        "and route 'public' has auth: none",
        f"{BASE_LINES + 10}: routes[0].filters[2]: rate limit 'by-claim' is keyed by "
        "jwt.claim.tenant, and route 'public' has auth: none",
        f"{BASE_LINES + 10}: routes[0].filters[3]: rate limit 'by-cert' is keyed by "
        "mtls.subject, and route 'public' has auth: none",
        f"{BASE_LINES + 14}: routes[1].filters[2]: rate limit 'by-cert' is keyed by "
        "mtls.subject, and route 'token' has auth: jwt",
    ]


def test_a_broken_service_or_limit_is_reported_once(tmp_path):
    assert errors(tmp_path, extended("""
        services:
          orders: {instances: []}
        rate_limits:
          per-client: {rate: fast, key: jwt.sub}
        routes:
          - id: orders
            uri: lb://orders
            filters: [RateLimit=per-client]
    """)) == [
        f"{BASE_LINES + 2}: services.orders.instances: at least one instance is needed",
        f'{BASE_LINES + 4}: rate_limits.per-client.rate: "fast" is not a rate '
        "(use COUNT/s, /min, /h or /day, as in 1000/min)",
    ]


# --- TLS: listener certificates, ciphers, certificate scopes, ForwardClientCert ----------------


def tls_files(tmp_path: Path) -> None:
    for name in ("gw.crt", "gw.key", "api.crt", "api.key", "legacy.crt", "legacy.key", "ca.pem"):
        (tmp_path / name).write_text("")


def test_listener_tls_certificates_and_ciphers(tmp_path):
    from fastgw.config.model import TLSCertificate

    tls_files(tmp_path)
    config = load(tmp_path, """\
        listeners:
          - address: 0.0.0.0:8443
            tls:
              cert: gw.crt
              key: gw.key
              certificates:
                - {cert: api.crt, key: api.key}
                - cert: legacy.crt
                  key: legacy.key
                  server_names: [Legacy.Example.com., "*.legacy.example.com", legacy.example.com]
                - {cert: legacy.crt, key: legacy.key, server_names: intranet}
              ciphers: ECDHE+AESGCM:ECDHE+CHACHA20
    """)
    tls = config.listeners[0].tls
    assert tls.ciphers == "ECDHE+AESGCM:ECDHE+CHACHA20"
    assert tls.certificates == (
        TLSCertificate(str(tmp_path / "api.crt"), str(tmp_path / "api.key")),
        TLSCertificate(
            str(tmp_path / "legacy.crt"),
            str(tmp_path / "legacy.key"),
            ("legacy.example.com", "*.legacy.example.com"),
        ),
        TLSCertificate(str(tmp_path / "legacy.crt"), str(tmp_path / "legacy.key"), ("intranet",)),
    )
    assert [c.line for c in tls.certificates] == [7, 8, 11]
    plain = load(tmp_path, "listeners: [{address: 0.0.0.0:8443, tls: {cert: gw.crt, key: gw.key}}]")
    assert (plain.listeners[0].tls.certificates, plain.listeners[0].tls.ciphers) == ((), None)


def test_bad_listener_tls_certificates_and_ciphers(tmp_path):
    tls_files(tmp_path)
    assert errors(tmp_path, """\
        listeners:
          - address: 0.0.0.0:8443
            tls:
              cert: gw.crt
              key: gw.key
              certificates:
                - {cert: api.crt}
                - {cert: api.crt, key: api.key, server_names: []}
                - {cert: api.crt, key: api.key, server_names: [127.0.0.1, "*.com", "a.*.b", "x y"]}
                - {cert: api.crt, key: api.key, server_names: [api.example.com, API.example.com]}
                - {cert: legacy.crt, key: legacy.key, server_names: api.example.com, server_name: a}
              ciphers: AES128-SHA
          - address: 0.0.0.0:8444
            tls: {cert: gw.crt, key: gw.key, certificates: [], ciphers: "ECDHE AESGCM"}
          - address: 0.0.0.0:8445
            tls: {cert: gw.crt, key: gw.key, min_version: "1.3", ciphers: ECDHE+AESGCM}
    """) == [
        "7: listeners[0].tls.certificates[0]: 'key' is required",
        "8: listeners[0].tls.certificates[1].server_names: list at least one name, or leave "
        "server_names out to use the certificate's DNS names",
        '9: listeners[0].tls.certificates[2].server_names[0]: "127.0.0.1": clients never send '
        "an IP address as a server name",
        '9: listeners[0].tls.certificates[2].server_names[1]: "*.com" would match names under '
        "a top-level domain",
        '9: listeners[0].tls.certificates[2].server_names[2]: "a.*.b" is not a server name '
        "(a DNS name, or *. and a DNS name)",
        '9: listeners[0].tls.certificates[2].server_names[3]: "x y" is not a server name '
        "(a DNS name, or *. and a DNS name)",
        "11: listeners[0].tls.certificates[4].server_name: unknown key "
        "(did you mean 'server_names'?)",
        "11: listeners[0].tls.certificates[4].server_names: api.example.com is already served "
        "by listeners[0].tls.certificates[3]",
        "12: listeners[0].tls.ciphers: 'AES128-SHA' selects no cipher fastgw allows (ECDHE key "
        "exchange; never NULL, export, DES, RC4 or MD5)",
        "14: listeners[1].tls.certificates: list at least one certificate, or leave "
        "certificates out",
        "14: listeners[1].tls.ciphers: 'ECDHE AESGCM' is not an OpenSSL cipher string "
        "(no spaces; join with ':')",
        '16: listeners[2].tls.ciphers: ciphers choose TLS 1.2 ciphers, and min_version: "1.3" '
        "turns TLS 1.2 off",
    ]


CERT_LISTENER = """\
listeners:
  - address: 0.0.0.0:8443
    tls: {cert: gw.crt, key: gw.key, client_auth: require, client_ca: ca.pem}
"""


def test_client_certificate_scopes(tmp_path):
    from fastgw.config.model import CertScopes

    tls_files(tmp_path)
    config = load(tmp_path, CERT_LISTENER + """\
auth:
  client_certs:
    scopes:
      "spiffe://example.org/ns/prod/sa/orders": [read_orders, write_orders, read_orders]
      "spiffe://example.org/ns/prod/sa/*": read_catalog
      "spiffe://example.org/ns/admin/**": [admin]
      urn:example:batch: [batch]
routes:
  - id: orders
    uri: http://a
    auth: mtls
    filters: ["RequireScopes=write_orders, SCOPE_read_orders"]
""")
    assert config.auth.client_cert_subject_from == "san_uri"
    assert config.auth.client_cert_scopes == (
        CertScopes("spiffe://example.org/ns/prod/sa/orders", ("read_orders", "write_orders")),
        CertScopes("spiffe://example.org/ns/prod/sa/*", ("read_catalog",)),
        CertScopes("spiffe://example.org/ns/admin/**", ("admin",)),
        CertScopes("urn:example:batch", ("batch",)),
    )
    assert config.routes[0].filters[0].args == ("write_orders", "SCOPE_read_orders")
    by_dns = load_config({"auth": {"client_certs": {
        "subject_from": "san_dns",
        "scopes": {"*.internal.example.com": ["internal"], "api-*.example.com": "api"},
    }}})  # fmt: skip
    assert [rule.pattern for rule in by_dns.auth.client_cert_scopes] == [
        "*.internal.example.com", "api-*.example.com",
    ]  # fmt: skip
    by_cn = load_config({"auth": {"client_certs": {"subject_from": "cn",
                                                   "scopes": {"Batch Jobs *": ["batch"]}}}})
    assert by_cn.auth.client_cert_scopes[0].pattern == "Batch Jobs *"


def test_bad_client_certificate_scopes(tmp_path):
    assert errors(tmp_path, """\
        auth:
          client_certs:
            scopes:
              orders: [read]
              "spiffe://example.org/**/x": [read]
              "spiffe://example.org/a": []
              "spiffe://example.org/b": ["read orders", SCOPE_write, {x: 1}]
              "spiffe://example.org/c": {read: true}
    """) == [
        "4: auth.client_certs.scopes.orders: 'orders' is not a URI (subject_from is san_uri), "
        "such as spiffe://example.org/ns/prod/sa/orders",
        '5: auth.client_certs.scopes["spiffe://example.org/**/x"]: '
        "'spiffe://example.org/**/x': '**' only as the whole last segment, as in .../sa/**",
        '6: auth.client_certs.scopes["spiffe://example.org/a"]: list at least one scope',
        '7: auth.client_certs.scopes["spiffe://example.org/b"][0]: "read orders" is not one '
        "scope (list scopes one by one)",
        '7: auth.client_certs.scopes["spiffe://example.org/b"][1]: "SCOPE_write": write '
        "'write'; the SCOPE_ prefix belongs in RequireScopes only",
        '7: auth.client_certs.scopes["spiffe://example.org/b"][2]: expected text, got a mapping',
        '8: auth.client_certs.scopes["spiffe://example.org/c"][0]: expected text, '
        "got a mapping",
    ]
    assert errors(tmp_path, """\
        auth:
          client_certs:
            subject_from: san_dns
            scopes:
              "spiffe://example.org/x": [a]
              "**.example.com": [a]
              "ok.example.com": [a]
    """) == [
        "5: auth.client_certs.scopes[\"spiffe://example.org/x\"]: 'spiffe://example.org/x' is "
        "not a DNS name pattern (subject_from is san_dns), such as orders.internal.example.com "
        "or *.internal.example.com",
        "6: auth.client_certs.scopes[\"**.example.com\"]: '**.example.com' is not a DNS name "
        "pattern (subject_from is san_dns), such as orders.internal.example.com or "
        "*.internal.example.com",
    ]
    # A wrong subject_from is reported once, not again for every pattern.
    assert dict_errors({"auth": {"client_certs": {"subject_from": "email",
                                                  "scopes": {"a@b": ["x"]}}}}) == [
        'auth.client_certs.subject_from: "email" is not one of san_uri, san_dns, cn',
    ]
    assert dict_errors({"auth": {"client_certs": {"scopes": ["x"]}}}) == [
        "auth.client_certs.scopes: expected a mapping of certificate subjects to scopes, "
        "got a list",
    ]


def test_require_scopes_on_mtls_routes_needs_certificate_scopes(tmp_path):
    tls_files(tmp_path)
    routes = """\
routes:
  - id: internal
    uri: http://a
    auth: mtls
    filters: [RequireScopes=read]
"""
    assert errors(tmp_path, CERT_LISTENER + routes) == [
        "8: routes[0].filters[0]: RequireScopes on route 'internal' (auth: mtls) needs "
        "auth.client_certs.scopes, the scopes client certificates are granted",
    ]
    with_scopes = CERT_LISTENER + "auth: {client_certs: {scopes: {'urn:a': [read]}}}\n" + routes
    assert load(tmp_path, with_scopes).routes[0].filters[0].args == ("read",)
    providers = BASE.split("\n", 2)[2]
    either = CERT_LISTENER + providers + routes.replace("auth: mtls", "auth: jwt_or_mtls")
    assert load(tmp_path, either).routes[0].auth == "jwt_or_mtls"


def test_forward_client_cert(tmp_path):
    tls_files(tmp_path)
    config = load(tmp_path, CERT_LISTENER + """\
routes:
  - id: internal
    uri: http://a
    auth: mtls
    filters:
      - ForwardClientCert=
      - ForwardClientCert=URI, Cert, URI
      - {name: ForwardClientCert, args: {fields: [DNS, Subject]}}
      - {name: ForwardClientCert}
      - ForwardClientCert=Hash
""")
    assert [f.args for f in config.routes[0].filters] == [
        ("Hash", "Subject", "URI", "DNS"),
        ("Hash", "Cert", "URI"),
        ("Hash", "Subject", "DNS"),
        ("Hash", "Subject", "URI", "DNS"),
        ("Hash",),
    ]
    assert errors(tmp_path, CERT_LISTENER + """\
routes:
  - id: internal
    uri: http://a
    auth: none
    filters: [ForwardClientCert=subject, ForwardClientCert=Chain, ForwardClientCert=By]
""") == [
        "8: routes[0].filters[0]: ForwardClientCert: unknown field 'subject' "
        "(did you mean 'Subject'?)",
        "8: routes[0].filters[1]: ForwardClientCert: Chain is not available (the verified "
        "chain is not exposed by Python's ssl); use Cert",
        "8: routes[0].filters[2]: ForwardClientCert: unknown field 'By' "
        "(known: Hash, Cert, Subject, URI, DNS)",
    ]
    assert dict_errors(route_with("filters", ["ForwardClientCert="])) == [
        "routes[0].filters[0]: ForwardClientCert needs a listener with tls.client_auth: "
        "optional or require",
    ]


# --- cors and python_filters ------------------------------------------------------------


def test_cors_reads_scg_globalcors_with_relaxed_keys(tmp_path):
    config = load_config(write(tmp_path, extended("""
        cors:
          corsConfigurations:
            '[/api/**]':
              allowed-origins: https://a.test, https://b.test
              allowed_methods: [GET, POST]
              max-age: 1m
          add-to-simple-url-handler-mapping: true
        services:
          svc: {instances: http://svc}
        routes:
          - id: r
            uri: lb://svc
            auth: none
            metadata: {cors: {allowedOriginPatterns: "https://*.c.test"}}
    """)))
    [(path, policy)] = config.cors.configurations
    assert path == "/api/**"
    assert policy.allowed_origins == ("https://a.test", "https://b.test")
    assert (policy.allowed_methods, policy.max_age) == (("GET", "POST"), 60)
    assert config.cors.add_to_simple_url_handler_mapping is True
    assert config.routes[0].cors.allowed_origin_patterns == ("https://*.c.test",)


def test_bad_cors_sections(tmp_path):
    assert errors(tmp_path, extended("""
        cors:
          cors-configurations:
            api/**: {allowedOrigins: https://a.test}
            '[/x]': 5
            '[/y]':
              allowedOrigins: [https://a.test, 7]
              allowedMethods: "GET, PO ST"
              allowCredentials: maybe
              allowedOriginPatterns: "https://a.test:[x]"
          add-to-simple-url-handler-mapping: 1
          mode: on
    """)) == [
        f'{BASE_LINES + 3}: cors.cors-configurations["api/**"]: "api/**" is not a path pattern '
        "such as '[/**]'",
        f'{BASE_LINES + 4}: cors.cors-configurations["[/x]"]: expected a mapping, got 5',
        f'{BASE_LINES + 6}: cors.cors-configurations["[/y]"].allowedOrigins: expected text, '
        "got 7",
        f'{BASE_LINES + 7}: cors.cors-configurations["[/y]"].allowedMethods: '
        "'PO ST' is not a method or '*'",
        f'{BASE_LINES + 8}: cors.cors-configurations["[/y]"].allowCredentials: '
        'expected true or false, got "maybe"',
        f'{BASE_LINES + 9}: cors.cors-configurations["[/y]"].allowedOriginPatterns: '
        "'https://a.test:[x]': ports are numbers or *",
        f"{BASE_LINES + 10}: cors.add-to-simple-url-handler-mapping: expected true or false, "
        "got 1",
        f"{BASE_LINES + 11}: cors.mode: unknown key (known: cors-configurations, "
        "add-to-simple-url-handler-mapping)",
    ]


def test_bad_python_filters(tmp_path):
    (tmp_path / "f.py").write_text("")
    assert errors(tmp_path, extended("""
        services:
          svc: {instances: http://svc}
        routes:
          - {id: orders, uri: lb://svc, auth: none}
        python_filters:
          - missing.py
          - "not a module"
          - {module: a.b, file: f.py}
          - {file: f.py, routes: [order]}
          - 5
    """)) == [
        f"{BASE_LINES + 6}: python_filters[0]: no such file: {tmp_path / 'missing.py'}",
        f'{BASE_LINES + 7}: python_filters[1]: "not a module" is not a module name (a.b.c) '
        "or a .py file",
        f"{BASE_LINES + 8}: python_filters[2]: takes one of module: NAME or file: PATH",
        f"{BASE_LINES + 9}: python_filters[3].routes: unknown route 'order' "
        "(did you mean 'orders'?)",
        f"{BASE_LINES + 10}: python_filters[4]: expected a mapping, got 5",
    ]


# --- the Spring Cloud Gateway layout ---------------------------------------------------------

SPRING = """\
services:
  order-service:
    instances: [http://127.0.0.1:9001]
spring:
  cloud:
    gateway:
"""


def test_spring_layout_reads_routes_in_order_with_default_filters(tmp_path):
    config = load(tmp_path, SPRING + """\
      defaultFilters:
        - AddResponseHeader=X-Default, 1
      routes:
        - id: later
          uri: lb://order-service
          order: 2
          predicates: ['Path=/a/{segment}']
        - id: sooner
          uri: lb://order-service
          order: -1
          predicates: [Path=/b/**]
          filters: [PreserveHostHeader, SecureHeaders]
          metadata: {response-timeout: 1500, connectTimeout: 200}
    """)
    later, sooner = config.routes[1], config.routes[0]
    assert [r.id for r in config.routes] == ["sooner", "later"]
    assert [f.name for f in sooner.filters] == [
        "AddResponseHeader", "PreserveHostHeader", "SecureHeaders"]
    assert later.predicates[0].args == ("/a/{segment}", "/a/{segment}/")
    assert later.auth == "none" and later.service == "order-service"
    timed = config.services[sooner.service]
    assert (timed.response_timeout, timed.connect_timeout) == (1.5, 0.2)
    assert timed.instances == config.services["order-service"].instances


def test_spring_4_layout_under_server_webflux(tmp_path):
    config = load(tmp_path, SPRING + """\
      server:
        webflux:
          routes:
            - id: r
              uri: lb://order-service
              predicates: [Path=/x]
    """)
    assert [r.id for r in config.routes] == ["r"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("      key-resolver: '#{@userKeyResolver}'\n",
         "7: spring.cloud.gateway.key-resolver: key-resolver names a Java KeyResolver bean; "
         "fastgw keys RequestRateLimiter by the verified principal"),
        ("      discovery: {locator: {enabled: true}}\n",
         "7: spring.cloud.gateway.discovery: discovery uses a Java DiscoveryClient; list the "
         "instances under services:"),
        ("      routes:\n        - id: r\n          uri: lb://order-servce\n",
         "9: spring.cloud.gateway.routes[0].uri: unknown service 'order-servce' "
         "(did you mean 'order-service'?)"),
        ("      routes:\n        - id: r\n          uri: lb://order-service\n"
         "          filters: ['SetPath=#{@path}']\n",
         '10: spring.cloud.gateway.routes[0].filters[0]: "SetPath=#{@path}" holds a SpEL '
         "expression (#{...}), which needs a JVM"),
        ("      routes:\n        - id: r\n          uri: lb://order-service\n"
         "          filters:\n            - name: RequestRateLimiter\n              args:\n"
         "                key-resolver: '#{@userKeyResolver}'\n",
         "12: spring.cloud.gateway.routes[0].filters[0].args: RequestRateLimiter: key-resolver "
         "names a Java KeyResolver bean; fastgw keys RequestRateLimiter by the verified "
         "principal"),
        ("      routes:\n        - id: r\n          uri: lb://order-service\n"
         "          filters: [RequestRateLimiter=5]\n",
         "10: spring.cloud.gateway.routes[0].filters[0]: RequestRateLimiter keys by the verified "
         "principal, and route 'r' has auth: none"),
        ("      routes:\n        - id: r\n          uri: lb://order-service\n"
         "          metadata: {response-timeout: -5}\n",
         "10: spring.cloud.gateway.routes[0].metadata.response-timeout: must be more than 0 ms"),
    ],
)  # fmt: skip
def test_spring_layout_errors(tmp_path, text, message):
    path = write(tmp_path, SPRING + text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [f"{line}: {m}" for _, line, m in info.value.errors] == [message]


def test_request_rate_limiter_is_a_rate_limit_keyed_by_the_principal(tmp_path):
    config = load_config({
        "auth": {"jwt": {"providers": [{"name": "p", "issuer": "https://i",
                                        "jwks_uri": "https://i/jwks"}]}},
        "routes": [{"id": "r", "uri": "http://a", "filters": [{
            "name": "RequestRateLimiter",
            "args": {"redis-rate-limiter.replenishRate": 10,
                     "redis-rate-limiter.burstCapacity": 20,
                     "redis-rate-limiter.requestedTokens": 2},
        }]}],
    })
    [spec] = config.routes[0].filters
    assert spec.name == "RateLimit"
    limit = config.rate_limits[spec.args[0]]
    assert (limit.rate.count, limit.rate.period, limit.burst, limit.key) == (5, 1.0, 10, "jwt.sub")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("ModifyRequestBody", "ModifyRequestBody is not available: it runs a Java "
                              "RewriteFunction on the body (a Python filter can)"),
        ("ModifyResponseBody", "ModifyResponseBody is not available: it runs a Java "
                               "RewriteFunction on the body (a Python filter can)"),
        ("JsonToGrpc=file:proto/hello.pb, file:proto/hello.proto, HelloService, hello",
         "JsonToGrpc is not available: it needs Java protobuf descriptors"),
        ("SaveSession", "SaveSession is not available: there is no Spring WebSession in fastgw"),
        ("CacheRequestBody", "CacheRequestBody is not available: it keeps the body for Java "
                             "code later in the chain"),
        ("SetResponseHeadr=X-A, b", "unknown filter 'SetResponseHeadr' (did you mean "
                                    "'SetResponseHeader'?)"),
        ("PreserveHostHeadr", "unknown filter 'PreserveHostHeadr' (did you mean "
                              "'PreserveHostHeader'?)"),
        ("RemoveJsonAttributesResponseBody=id, false",
         "RemoveJsonAttributesResponseBody is not available in fastgw yet"),
    ],
)  # fmt: skip
def test_java_only_factories_and_misspellings_name_their_line(tmp_path, item, message):
    path = write(tmp_path, SPRING + f"""\
      routes:
        - id: r
          uri: lb://order-service
          filters:
            - AddRequestHeader=X-A, b
            - {item}
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == [(str(path), 12, f"spring.cloud.gateway.routes[0].filters[1]: "
                                                 f"{message}")]
