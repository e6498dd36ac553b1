"""The audit log (SPEC section 5): one JSON line per 401, 403, 429 and mTLS failure.

Records carry who and what was refused and why, never the credential: no
token, no signature, no header value other than what is listed here.
"""

from __future__ import annotations

import time

from .logs import LineWriter, rfc3339_ms


class AuditLog:
    def __init__(self, path: str, *, max_queued: int = 100_000) -> None:
        self.writer = LineWriter(path, max_queued=max_queued, name="audit")

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    def record(
        self,
        ex,
        *,
        event: str,
        reason: str,
        status: int,
        sub: str | None = None,
        iss: str | None = None,
        kid: str | None = None,
        client_cert_subject: str | None = None,
        limit: str | None = None,
        key: str | None = None,
    ) -> None:
        request = ex.request
        line = {
            "ts": rfc3339_ms(time.time()),
            "event": event,
            "reason": reason,
            "request_id": request.request_id,
            "client_ip": request.client_ip,
            "method": request.method,
            "path": request.path,
            "route": request.route_id,
            "status": status,
        }
        for field, value in (("sub", sub), ("iss", iss), ("kid", kid),
                             ("client_cert_subject", client_cert_subject), ("limit", limit),
                             ("key", key)):
            if value is not None:
                # Names from a token that failed verification are the caller's words: bounded.
                line[field] = value if len(value) <= 256 else value[:256] + "..."
        self.writer.write(line)

    def connection_failure(self, client_ip: str, event: str, reason: str) -> None:
        """A refusal before any request existed (a failed client-certificate handshake)."""
        self.writer.write({
            "ts": rfc3339_ms(time.time()),
            "event": event,
            "reason": reason,
            "request_id": None,
            "client_ip": client_ip,
            "status": None,
        })

    def close(self) -> None:
        self.writer.close()
