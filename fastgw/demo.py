"""``fastgw demo``: a gateway on :8080 in front of a demo upstream, nothing else needed."""

from __future__ import annotations

import os
import sys
import tempfile

DEMO_CONFIG = """\
# The config fastgw demo is running; copy it as a starting point.
listeners:
  - address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin_port}
access_log:
  path: "-"
limits:
  max_body: 1MiB
services:
  demo:
    instances: ["{upstream}"]
    connect_timeout: 1s
    response_timeout: 5s
routes:
  - id: orders
    uri: lb://demo
    predicates: ["Path=/orders/**", "Method=GET,POST"]
    auth: none
    filters: ["AddRequestHeader=X-Demo, orders", "AddResponseHeader=X-Gateway, fastgw"]
  - id: public
    uri: lb://demo
    predicates: ["Path=/public/{{name}}"]
    auth: none
    filters: ["StripPrefix=1"]
"""


def run_demo(port: int = 8080, admin_port: int = 9901) -> int:
    from .testing import RecordingUpstream
    from .workers import serve

    workdir = tempfile.mkdtemp(prefix="fastgw-demo-")
    with RecordingUpstream() as upstream:
        path = os.path.join(workdir, "gateway.yaml")
        with open(path, "w") as f:
            f.write(DEMO_CONFIG.format(port=port, admin_port=admin_port, upstream=upstream.url))
        base = f"http://127.0.0.1:{port}"
        print(
            f"""
fastgw demo: gateway {base}, admin http://127.0.0.1:{admin_port}, config {path}

  # routed to the demo upstream, which echoes what it received
  curl -i {base}/orders/42
  # /public/{{name}} with StripPrefix=1: the upstream sees /hello
  curl -i {base}/public/hello
  # no route: 404
  curl -i {base}/nowhere
  # a path that escapes the root: 400, nothing forwarded
  curl -i --path-as-is {base}/orders/../../etc/passwd
  # metrics, health
  curl -s http://127.0.0.1:{admin_port}/metrics | grep fastgw_requests_total

Ctrl-C stops it.
""",
            file=sys.stderr,
            flush=True,
        )
        return serve(path)
