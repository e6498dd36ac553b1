"""Header lists as the gateway handles them: ordered, case-insensitive, repeatable."""

from collections.abc import Iterable, Iterator

from .._core import active

_encode_fields = active("head").encode_fields

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


def _key(name: str | bytes) -> bytes:
    return (name.encode("latin-1") if isinstance(name, str) else name).lower()


class Headers:
    """An ordered multi-map of header fields; names compare case-insensitively.

    ``fields`` holds them as the bytes that arrived, ``(lower-cased name, name,
    value)`` triples, so forwarding them costs a join; ``str`` views are decoded as
    latin-1 only when asked for, and every byte a client sent survives.
    """

    __slots__ = ("fields",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.fields: list[tuple[bytes, bytes, bytes]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def from_raw(cls, items: list[tuple[bytes, bytes, bytes]]) -> "Headers":
        """``items`` as (lower-cased name, name, value) bytes, taken as they are."""
        headers = cls.__new__(cls)
        headers.fields = items
        return headers

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n.decode("latin-1"), v.decode("latin-1")) for _, n, v in self.fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        key = _key(name)
        return any(k == key for k, _, _ in self.fields)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = _key(name)
        for k, _, v in self.fields:
            if k == key:
                return v.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        key = _key(name)
        return [v.decode("latin-1") for k, _, v in self.fields if k == key]

    def append_raw(self, field: tuple[bytes, bytes, bytes]) -> None:
        """Add a field already encoded as (lower-cased name, name, value)."""
        self.fields.append(field)

    def add(self, name: str, value: str) -> None:
        raw = name.encode("latin-1")
        self.fields.append((raw.lower(), raw, value.encode("latin-1")))

    def remove(self, name: str | bytes) -> None:
        key = _key(name)
        self.fields = [item for item in self.fields if item[0] != key]

    def remove_all(self, lower_names: Iterable[str | bytes]) -> None:
        keys = {_key(n) for n in lower_names}
        self.fields = [item for item in self.fields if item[0] not in keys]

    def items(self) -> list[tuple[str, str]]:
        return list(self)

    def encode(self) -> bytes:
        return _encode_fields(self.fields)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"
