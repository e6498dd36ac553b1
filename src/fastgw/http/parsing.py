"""What the HTTP/1.1 parsers (``fastgw._core``'s ``h1`` twins) raise from ``feed``.

Anything a protocol callback raises comes out of ``feed`` as it was raised.
"""


class BadMessage(Exception):
    """Bytes that are not HTTP/1.1 as the parser accepts it; the text says why."""


class HeadTooLarge(Exception):
    """A request line or header section over its limit: ``status`` is 414 or 431."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Upgrade(Exception):
    """The message switched protocols; ``offset`` is where its bytes end in the
    data just fed (the rest belongs to the new protocol)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset
