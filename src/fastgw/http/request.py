"""The request as filters and checks see it."""

from .headers import Headers


class Request:
    __slots__ = (
        "claims",
        "client_cert",
        "client_ip",
        "context",  # set by a route's Python filters only (fastgw.filters.python.Context)
        "forwarded_for",
        "headers",
        "host",
        "identity",
        "method",
        "path",
        "path_vars",
        "query",
        "request_id_bytes",
        "route_id",
        "scheme",
        "scopes",
        "sent",
        "version",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        version: str,
        headers: Headers,
        host: str,
        client_ip: str,
        scheme: str,
        request_id: str | bytes,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.host = host
        self.client_ip = client_ip
        self.scheme = scheme
        self.request_id_bytes = (request_id if type(request_id) is bytes
                                 else request_id.encode("ascii"))
        self.route_id: str | None = None
        self.path_vars: dict[str, str] | None = None
        self.claims: dict | None = None
        self.scopes: frozenset[str] | None = None  # what the verified credential grants
        self.client_cert = None  # the connection's verified client certificate (ClientIdentity)
        self.forwarded_for: list[str] = []  # X-Forwarded-For values the caller sent
        self.identity = None  # the verified credential (token result, client certificate)
        self.sent: list[tuple[bytes, bytes]] | tuple = ()  # header fields as the client sent them

    def sent_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case) as the client sent it: what routes see."""
        key = name.encode("latin-1")
        return [v.decode("latin-1") for n, v in self.sent if n.lower() == key]

    @property
    def request_id(self) -> str:
        return self.request_id_bytes.decode("ascii")

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} id={self.request_id}>"
