"""``fastgw demo``: a gateway on :8080 in front of a demo upstream, nothing else needed.

It makes a signing key, publishes its JWKS as a file, mints tokens with it and
prints curl lines that show each answer at the door.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

ISSUER = "https://idp.demo.fastgw.local"
AUDIENCE = "orders-api"

DEMO_CONFIG = """\
# The config fastgw demo is running; copy it as a starting point.
listeners:
  - address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin_port}
access_log:
  path: "-"
audit:
  path: {audit}
limits:
  max_body: 1MiB
auth:
  jwt:
    providers:
      - name: demo
        issuer: {issuer}
        jwks_file: {jwks}
        audiences: [{audience}]
        algorithms: [ES256]
rate_limits:
  per-client:
    rate: 1000/min
    key: jwt.sub
  demo-trickle:
    rate: 3/min
    key: ip
services:
  demo:
    instances: ["{upstream}"]
    connect_timeout: 1s
    response_timeout: 5s
routes:
  - id: orders
    uri: lb://demo
    predicates: ["Path=/orders/**", "Method=GET,POST"]
    filters:
      - RequireScopes=read_orders
      - RateLimit=per-client
      - TokenRelay=
      - AddResponseHeader=X-Gateway, fastgw
  - id: public
    uri: lb://demo
    predicates: ["Path=/public/{{name}}"]
    auth: none
    filters: ["StripPrefix=1"]
  - id: limited
    uri: lb://demo
    predicates: ["Path=/limited/**"]
    auth: none
    filters: ["RateLimit=demo-trickle"]
"""


def run_demo(port: int = 8080, admin_port: int = 9901) -> int:
    from .testing import RecordingUpstream
    from .testing.idp import SigningKey, jwks, mint_token
    from .workers import serve

    workdir = tempfile.mkdtemp(prefix="fastgw-demo-")
    key = SigningKey.generate("ES256")
    jwks_path = os.path.join(workdir, "jwks.json")
    with open(jwks_path, "w") as f:
        json.dump(jwks(key), f, indent=2)
    with open(os.path.join(workdir, "demo-key.pem"), "wb") as f:
        f.write(key.private_pem())
    reader = mint_token(key, iss=ISSUER, sub="alice", aud=AUDIENCE, scope="read_orders",
                        ttl=3600)
    stranger = mint_token(key, iss=ISSUER, sub="bob", aud=AUDIENCE, scope="profile", ttl=3600)

    with RecordingUpstream() as upstream:
        path = os.path.join(workdir, "gateway.yaml")
        with open(path, "w") as f:
            f.write(DEMO_CONFIG.format(
                port=port, admin_port=admin_port, upstream=upstream.url, issuer=ISSUER,
                audience=AUDIENCE, jwks=jwks_path, audit=os.path.join(workdir, "audit.log"),
            ))
        base = f"http://127.0.0.1:{port}"
        print(
            f"""
fastgw demo: gateway {base}, admin http://127.0.0.1:{admin_port}
config {path} (key and JWKS beside it)

  # 200: a token with scope read_orders; the upstream echoes what it received
  curl -i {base}/orders/42 -H 'Authorization: Bearer {reader}'
  # 401: no token (WWW-Authenticate: Bearer)
  curl -i {base}/orders/42
  # 401: a tampered token (the reason goes to the audit log only)
  curl -i {base}/orders/42 -H 'Authorization: Bearer {reader[:-4]}AAAA'
  # 403: a valid token without read_orders
  curl -i {base}/orders/42 -H 'Authorization: Bearer {stranger}'
  # 429: 3 requests a minute per client address, the 4th is refused (Retry-After)
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' {base}/limited/x; done
  # auth: none, StripPrefix=1: the upstream sees /hello
  curl -i {base}/public/hello
  # why a request is refused, without sending it
  fastgw explain -c {path} GET /orders/42 --token {stranger}
  # the audit log, and metrics
  tail {workdir}/audit.log
  curl -s http://127.0.0.1:{admin_port}/metrics | grep _total

Ctrl-C stops it.
""",
            file=sys.stderr,
            flush=True,
        )
        return serve(path)
