"""What an exchange needs of the connection its request came on.

An exchange answers through this face only: a few fields it reads on every
request and the calls that write, close and hand over the connection. The
HTTP/1.1 connection is one kind of client; a stream of a multiplexed
connection would be another.
"""

from __future__ import annotations


class Client:
    __slots__ = (
        "access_log",
        "client_ip",
        "closing",
        "draining",
        "forwarded",
        "loop",
        "request_ids",
        "server_uri",
        "trusted",
        "write_paused",
    )

    def __init__(self, loop, access_log, request_ids) -> None:
        self.loop = loop
        self.access_log = access_log  # a LineWriter, or None when the access log is off
        self.request_ids = request_ids
        self.client_ip = ""
        self.trusted = False  # the peer is a trusted proxy: its X-Forwarded-For is kept
        self.server_uri = None
        self.closing = False
        self.draining = False  # set by the gateway: answers say Connection: close
        self.write_paused = False
        self.forwarded = b""  # X-Forwarded-For/-Proto lines of an untrusted peer

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def exchange_done(self, ex) -> None:
        """The exchange's response is completely written."""
        raise NotImplementedError

    def body_consumed(self, n: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def new_request_id(self) -> str:
        return self.request_ids.next().decode("ascii")
