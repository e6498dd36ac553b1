"""A shop's filters in front of its backend: each of Zuul's four kinds once.

Named in gateway.yaml under ``python_filters:``; fastgw executes this file at
start and again on every SIGHUP.
"""

import asyncio

from fastgw.filters.python import error, post, pre, route

BANNED = frozenset({"203.0.113.7"})


@pre(order=10)
def refuse_banned_clients(ctx):
    """Answer early: a banned address never reaches the backend."""
    if ctx.client_ip in BANNED or ctx.request.headers.get("x-banned") == "yes":
        ctx.respond(403, '{"error": "banned"}', {"Content-Type": "application/json"})


@pre(order=20)
async def tenant(ctx):
    """Change what goes upstream, after waiting for something (here: nothing)."""
    await asyncio.sleep(0)
    ctx.request.headers["X-Tenant"] = ctx.claims.get("tenant", "public")
    ctx.state["tenant"] = ctx.request.headers["X-Tenant"]


@route
def canary(ctx):
    """Send the canary lane (Path=/shop/{lane}/**), or a request asking for it, to the canary."""
    if ctx.vars.get("lane") == "canary" or ctx.request.headers.get("x-canary") == "1":
        ctx.service = "canary"


@post
def served_for(ctx):
    ctx.response_headers["X-Served-For"] = ctx.state.get("tenant", "-")


@error
def resting(ctx):
    """The backend failed: a page of our own instead of a bare 502."""
    if ctx.status in (502, 503, 504):
        ctx.respond(503, "the shop is resting; try again soon", {"Retry-After": "5"})
