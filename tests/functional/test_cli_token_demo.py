"""The command line: ``fastgw token`` (mint a test token) and ``fastgw demo`` (SPEC section 2).

Both run as subprocesses; tokens are checked with PyJWT, the demo with curl.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from fastgw.testing.process import SOURCE_ROOT, accepts_connections, free_port

from .support import fetch, run_python

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(public_key) -> str:
    """RFC 7638 SHA-256 thumbprint, computed from the key's numbers."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        members = {"e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8)),
                   "kty": "RSA",
                   "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8))}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        members = {"crv": "P-256", "kty": "EC",
                   "x": b64url(numbers.x.to_bytes(32)), "y": b64url(numbers.y.to_bytes(32))}
    else:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def write_key(path, private_key, encryption=None):
    path.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    ))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """PEM files by name, and the private keys of the usable ones."""
    folder = tmp_path_factory.mktemp("keys")
    private = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    paths = {name: write_key(folder / f"{name}.pem", key) for name, key in private.items()}
    paths["p521"] = write_key(folder / "p521.pem", ec.generate_private_key(ec.SECP521R1()))
    paths["ed448"] = write_key(folder / "ed448.pem", ed448.Ed448PrivateKey.generate())
    paths["encrypted"] = write_key(folder / "encrypted.pem", private["ec"],
                                   serialization.BestAvailableEncryption(b"secret"))
    paths["public"] = folder / "public.pem"
    paths["public"].write_bytes(private["ec"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    paths["text"] = folder / "text.pem"
    paths["text"].write_text("not a key\n")
    paths["absent"] = folder / "absent.pem"
    return paths, private


KEY_ALGORITHMS = [("rsa", "RS256"), ("ec", "ES256"), ("ed25519", "EdDSA")]


def token_command(*args) -> subprocess.CompletedProcess:
    return run_python("-m", "fastgw", "token", *map(str, args))


def mint(*args) -> tuple[str, int, int]:
    """A token from ``fastgw token ARGS``, and the clock before and after it ran."""
    before = int(time.time())
    result = token_command(*args)
    after = int(time.time())
    assert result.returncode == 0, result
    assert result.stderr == "", result
    return result.stdout.strip(), before, after


@pytest.mark.parametrize(("name", "alg"), KEY_ALGORITHMS)
def test_token_defaults_come_from_the_key(keys, name, alg):
    paths, private = keys
    token, before, after = mint("--key", paths[name])
    public_key = private[name].public_key()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["kid"] == thumbprint(public_key)
    claims = jwt.decode(token, public_key, algorithms=[alg],
                        options={"require": ["exp", "iat", "nbf"]})
    assert before <= claims["iat"] <= after
    assert claims == {"iss": "fastgw-dev", "sub": "dev-user", "iat": claims["iat"],
                      "nbf": claims["iat"], "exp": claims["iat"] + 3600}


@pytest.mark.parametrize(("name", "alg"), KEY_ALGORITHMS)
def test_token_carries_every_option_given(keys, name, alg):
    paths, private = keys
    token, before, after = mint(
        "--key", paths[name], "--sub", "alice", "--scope", "read_orders write_orders",
        "--aud", "orders-api", "--aud", "billing-api", "--iss", "https://idp.example.test",
        "--ttl", "90s", "--kid", "my-key-1",
        "--claim", 'tenant="acme"', "--claim", 'roles=["admin", "ops"]', "--claim", "level=3",
        "--claim", 'meta={"a": {"b": null}}', "--claim", 'eq="x=y"', "--claim", "flag=true",
    )
    assert jwt.get_unverified_header(token)["kid"] == "my-key-1"
    assert jwt.get_unverified_header(token)["alg"] == alg
    claims = jwt.decode(token, private[name].public_key(), algorithms=[alg],
                        audience="billing-api", issuer="https://idp.example.test")
    assert before <= claims["iat"] <= after
    assert claims == {
        "iss": "https://idp.example.test", "sub": "alice", "iat": claims["iat"],
        "nbf": claims["iat"], "exp": claims["iat"] + 90,
        "scope": "read_orders write_orders", "aud": ["orders-api", "billing-api"],
        "tenant": "acme", "roles": ["admin", "ops"], "level": 3,
        "meta": {"a": {"b": None}}, "eq": "x=y", "flag": True,
    }


@pytest.mark.parametrize(("ttl", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600),
                                              ("1d", 86400)])
def test_token_ttl_units_set_the_expiry(keys, ttl, seconds):
    paths, private = keys
    token, _, _ = mint("--key", paths["ec"], "--ttl", ttl, "--aud", "orders-api")
    claims = jwt.decode(token, private["ec"].public_key(), algorithms=["ES256"],
                        audience="orders-api")
    assert claims["exp"] - claims["iat"] == seconds
    assert claims["aud"] == "orders-api"


def test_token_uses_an_alg_that_fits_the_key(keys):
    paths, private = keys
    token, _, _ = mint("--key", paths["rsa"], "--alg", "PS256")
    assert jwt.get_unverified_header(token)["alg"] == "PS256"
    jwt.decode(token, private["rsa"].public_key(), algorithms=["PS256"])
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, private["rsa"].public_key(), algorithms=["RS256"])


@pytest.mark.parametrize(("name", "alg"), KEY_ALGORITHMS)
def test_token_jwks_publishes_the_public_key_that_verifies_its_tokens(keys, name, alg):
    paths, private = keys
    result = token_command("--key", paths[name], "--jwks")
    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert len(document["keys"]) == 1
    jwk = document["keys"][0]
    assert not PRIVATE_MEMBERS & set(jwk), jwk
    assert jwk["kid"] == thumbprint(private[name].public_key())
    assert (jwk["alg"], jwk["use"]) == (alg, "sig")
    token, _, _ = mint("--key", paths[name], "--sub", "carol")
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg])
    assert claims["sub"] == "carol"


def test_token_jwks_names_the_kid_given(keys):
    paths, _ = keys
    result = token_command("--key", paths["ec"], "--kid", "k-2026", "--jwks")
    assert result.returncode == 0, result
    assert [key["kid"] for key in json.loads(result.stdout)["keys"]] == ["k-2026"]


HOSTILE = [
    ("absent", (), r"cannot read a private key from .*absent\.pem: .*No such file"),
    ("text", (), r"cannot read a private key from .*text\.pem"),
    ("public", (), r"cannot read a private key from .*public\.pem: .*private key"),
    ("encrypted", (), r"cannot read a private key from .*encrypted\.pem: .*encrypted"),
    ("p521", (), r"unsupported key type \(use RSA, EC P-256/P-384 or Ed25519\)"),
    ("ed448", (), r"unsupported key type"),
    ("ec", ("--ttl", "forever"), r'--ttl: "forever" is not a duration'),
    ("ec", ("--ttl=-1h",), r'--ttl: "-1h" is not a duration'),
    ("ec", ("--ttl", "10 parsecs"), r'--ttl: "10 parsecs" is not a duration'),
    ("ec", ("--claim", "tenant"), r"--claim 'tenant': use NAME=JSON"),
]


@pytest.mark.parametrize(("name", "args", "message"), HOSTILE,
                         ids=[f"{name}-{'-'.join(args)}" for name, args, _ in HOSTILE])
def test_token_refuses_hostile_input_with_a_clear_error(keys, name, args, message):
    paths, _ = keys
    result = token_command("--key", paths[name], *args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert re.search(r"^fastgw token: " + message, result.stderr, re.MULTILINE), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("claim", ["roles=[admin, ops]", "tenant={oops", 'name="open'])
def test_token_refuses_a_claim_that_opens_json_but_is_not_json(keys, claim):
    paths, _ = keys
    result = token_command("--key", paths["ec"], "--claim", claim)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert f"fastgw token: --claim {claim!r}: not valid JSON" in result.stderr


def test_token_takes_other_claim_text_as_a_string(keys):
    paths, _ = keys
    token, _, _ = mint("--key", paths["ec"], "--claim", "tenant=acme", "--claim", "n=42",
                       "--claim", "ok=true", "--claim", "empty=")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["tenant"], claims["n"], claims["ok"], claims["empty"]) == ("acme", 42, True, "")


@pytest.mark.parametrize(("name", "args", "fits"), [
    ("ec", ("--alg", "RS256"), "ES256"),
    ("ec", ("--alg", "ES384"), "ES256"),
    ("ec", ("--alg", "none"), "ES256"),
    ("rsa", ("--alg", "ES256"), "RS256, RS384, RS512, PS256, PS384, PS512"),
    ("rsa", ("--alg", "HS256"), "RS256, RS384, RS512, PS256, PS384, PS512"),
    ("ed25519", ("--alg", "ES256"), "EdDSA"),
    ("ec", ("--alg", "ES384", "--jwks"), "ES256"),
], ids=lambda value: "-".join(value) if isinstance(value, tuple) else value)
def test_token_refuses_an_alg_that_does_not_fit_the_key(keys, name, args, fits):
    paths, _ = keys
    result = token_command("--key", paths[name], *args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert (f"fastgw token: --alg {args[1]} does not fit this key (it signs with {fits})"
            in result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("ttl", ["0s", "250ms"])
def test_token_refuses_a_ttl_under_a_second(keys, ttl):
    paths, _ = keys
    result = token_command("--key", paths["ec"], "--ttl", ttl)
    assert result.returncode == 2 and result.stdout == ""
    assert f"fastgw token: --ttl: {ttl} is less than the 1s a token must live" in result.stderr


class Demo:
    """``python -m fastgw demo`` on free ports; its stderr (banner and log) in a file."""

    def __init__(self, workdir, port: int | None = None) -> None:
        self.port, self.admin_port = port or free_port(), free_port()
        self.stderr_path = workdir / "demo.stderr"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(workdir)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT),
                                                          env.get("PYTHONPATH")]))
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastgw", "demo", "--port", str(self.port),
                 "--admin-port", str(self.admin_port)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, start_new_session=True,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 20.0) -> None:
        wanted = (f"admin listening on http://127.0.0.1:{self.admin_port}",
                  f"listening on {self.base}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stderr()
            if all(line in self.stderr() for line in wanted) and accepts_connections(self.port):
                return
            time.sleep(0.05)
        pytest.fail(f"fastgw demo not listening after {timeout}s:\n{self.stderr()}")

    def command(self, comment: str) -> list[str]:
        """The shell words of the banner line after the comment that starts with ``comment``."""
        lines = [line.strip() for line in self.stderr().splitlines()]
        for index, line in enumerate(lines):
            if line.startswith(f"# {comment}"):
                return shlex.split(lines[index + 1])
        pytest.fail(f"no '# {comment}' line in the banner:\n{self.stderr()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def running_demo(workdir):
    demo = Demo(workdir)
    try:
        demo.wait_listening()
        yield demo
    finally:
        demo.kill()


def curl_line(words: list[str], *extra: str):
    """Run a banner ``curl -i URL [-H ...]`` line through curl."""
    assert words[:2] == ["curl", "-i"], words
    url, *args = words[2:]
    return fetch(url, "--noproxy", "*", *args, *extra, timeout=20)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_demo(tmp_path_factory.mktemp("demo")) as demo:
        yield demo


def test_demo_allows_a_token_with_the_scope_and_relays_it(demo):
    words = demo.command("200: a token with scope read_orders")
    response = curl_line(words)
    assert response.status == 200, response
    assert response.header("x-gateway") == "fastgw"
    received = response.json()
    assert received["target"] == "/orders/42"
    sent = words[words.index("-H") + 1]
    assert ["Authorization", sent.partition(": ")[2]] in received["headers"]


def test_demo_answers_401_without_a_token(demo):
    response = curl_line(demo.command("401: no token"))
    assert response.status == 401, response
    assert response.header("www-authenticate") == "Bearer"
    assert "x-upstream-port" not in {name.lower() for name, _ in response.headers}


def test_demo_answers_401_to_the_tampered_token(demo):
    good = demo.command("200: a token with scope read_orders")[-1]
    tampered = demo.command("401: a tampered token")
    assert tampered[-1] != good and tampered[-1][:-4] == good[:-4]
    response = curl_line(tampered)
    assert response.status == 401, response
    assert response.header("www-authenticate").startswith('Bearer error="invalid_token"')


def test_demo_answers_403_to_a_token_without_the_scope(demo):
    response = curl_line(demo.command("403: a valid token without read_orders"))
    assert response.status == 403, response
    challenge = response.header("www-authenticate")
    assert 'error="insufficient_scope"' in challenge and 'scope="read_orders"' in challenge


def test_demo_rate_limit_refuses_the_fourth_request_with_retry_after(demo):
    loop = " ".join(demo.command("429: 3 requests a minute"))
    url = re.search(r"http://\S+/limited/\S+", loop)[0]
    responses = [fetch(url, "--noproxy", "*", timeout=20) for _ in range(4)]
    assert [r.status for r in responses] == [200, 200, 200, 429], responses
    assert int(responses[3].header("retry-after")) > 0
    assert responses[3].header("ratelimit-remaining") == "0"


def test_demo_public_route_strips_the_prefix(demo):
    response = curl_line(demo.command("auth: none, StripPrefix=1"))
    assert response.status == 200, response
    assert response.json()["target"] == "/hello"


def test_demo_admin_serves_fastgw_metrics(demo):
    assert curl_line(demo.command("auth: none, StripPrefix=1")).status == 200
    words = demo.command("the audit log, and metrics")
    assert words[0] == "tail"
    metrics_url = re.search(r"curl -s (\S+/metrics)", demo.stderr())[1]
    assert metrics_url == f"http://127.0.0.1:{demo.admin_port}/metrics"
    response = fetch(metrics_url, "--noproxy", "*", timeout=20)
    assert response.status == 200, response
    assert 'fastgw_requests_total{route="public",method="GET",status="200"}' in (
        response.body.decode())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_cleanly_on_a_signal(tmp_path, sig):
    with running_demo(tmp_path) as demo:
        demo.process.send_signal(sig)
        assert demo.process.wait(timeout=20) == 0, demo.stderr()
        assert "draining" in demo.stderr()
        assert not accepts_connections(demo.port)


def test_demo_on_a_busy_port_exits_2_and_says_why(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        demo = Demo(tmp_path, port=busy.getsockname()[1])
        try:
            assert demo.process.wait(timeout=20) == 2, demo.stderr()
        finally:
            demo.kill()
    assert re.search(rf"cannot start: .*127\.0\.0\.1:{demo.port}: Address already in use",
                     demo.stderr()), demo.stderr()
