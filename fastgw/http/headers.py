"""Header lists as the gateway handles them: ordered, case-insensitive, repeatable."""

from collections.abc import Iterator

# RFC 9110 section 7.6.1, plus the ones proxies are known to leak.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class Headers:
    """An ordered multi-map of header fields; names compare case-insensitively.

    Values are ``str`` decoded as latin-1, so every byte a client sent
    survives a round trip unchanged.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items if items is not None else []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        low = name.lower()
        return any(n.lower() == low for n, _ in self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.remove(name)
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        low = name.lower()
        for n, v in self._items:
            if n.lower() == low:
                return v
        return default

    def getall(self, name: str) -> list[str]:
        low = name.lower()
        return [v for n, v in self._items if n.lower() == low]

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        low = name.lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != low]

    def remove_all(self, lower_names: set[str] | frozenset[str]) -> None:
        self._items = [(n, v) for n, v in self._items if n.lower() not in lower_names]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def encode(self) -> bytes:
        return b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def connection_tokens(values: list[str]) -> set[str]:
    """Lower-cased names listed in Connection headers (RFC 9110 section 7.6.1)."""
    tokens = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens
