"""Signed session cookies and CSRF tokens for the review UI (stdlib HMAC, no server-side session table).

The cookie holds `{"sid", "user", "role", "exp"}` as base64 JSON plus an HMAC-SHA256 over it. `sid` is random
per login (and per anonymous visit, so the login form has a CSRF token too); a form's CSRF token is an HMAC
of the sid, so a token from one session is worthless in another and nothing needs storing.

The secret comes from NOTECODER_SESSION_SECRET or, when that is empty, from a random file under data_dir
that the first process creates: every worker of `serve --workers N` then signs with the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SECRET_FILE = "ui_session_secret"
SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True)
class SessionData:
    sid: str
    user: str | None = None
    role: str | None = None
    exp: int = 0


def load_or_create_secret(data_dir: Path) -> bytes:
    """The secret in `data_dir/ui_session_secret`, created (mode 0600) by whichever process comes first."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            # link() is atomic and fails if the target exists: racing workers all end up reading one file.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds too short a secret; delete it to make a new one")
    return secret.encode()


class SessionSigner:
    def __init__(self, secret: bytes, ttl_s: int = SESSION_TTL_S) -> None:
        # Separate keys per purpose: a cookie MAC can never double as a CSRF token.
        self._cookie_key = hmac.new(secret, b"notecoder-ui-cookie", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret, b"notecoder-ui-csrf", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def new(self, user: str | None = None, role: str | None = None) -> SessionData:
        return SessionData(sid=secrets.token_urlsafe(18), user=user, role=role, exp=int(time.time()) + self.ttl_s)

    def dumps(self, data: SessionData) -> str:
        payload = json.dumps({"sid": data.sid, "user": data.user, "role": data.role, "exp": data.exp},
                             separators=(",", ":"), sort_keys=True).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(body)}"

    def loads(self, token: str | None) -> SessionData | None:
        """The session in a cookie value, or None when it is missing, forged, malformed or expired."""
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("sid"), str) or not isinstance(raw.get("exp"), int):
            return None
        if raw["exp"] <= time.time():
            return None
        user, role = raw.get("user"), raw.get("role")
        return SessionData(sid=raw["sid"], user=user if isinstance(user, str) else None,
                           role=role if isinstance(role, str) else None, exp=raw["exp"])

    def csrf_token(self, data: SessionData) -> str:
        return hmac.new(self._csrf_key, data.sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, data: SessionData | None, token: str | None) -> bool:
        return data is not None and bool(token) and hmac.compare_digest(self.csrf_token(data), str(token))

    def _mac(self, body: str) -> str:
        return hmac.new(self._cookie_key, body.encode(), hashlib.sha256).hexdigest()


class LoginThrottle:
    """Failed logins per username in a sliding window; past the limit, logins wait (per process).

    With several workers each keeps its own count, so an attacker gets at most workers x limit tries a
    window: a brake on guessing, not a lockout a stranger could use against a coder.
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def retry_after(self, username: str) -> int:
        """Seconds until `username` may try again; 0 when it may now."""
        key = username.strip().lower()
        with self._lock:
            now = self._clock()
            recent = self._recent(key, now)
            if len(recent) < self.limit:
                return 0
            return max(1, int(recent[-self.limit] + self.window_s - now) + 1)

    def failed(self, username: str) -> None:
        key = username.strip().lower()
        with self._lock:
            now = self._clock()
            self._recent(key, now)
            self._failures.setdefault(key, []).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username.strip().lower(), None)
