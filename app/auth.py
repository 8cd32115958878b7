"""API keys and UI users: creation, hashing, verification, roles.

A key looks like `nc_<key_id>_<secret>`. `key_id` is public and finds the row; the 256-bit secret is
stored only as SHA-256(salt || secret). A fast hash is enough for a random secret of that length (there is
nothing to brute-force); passwords, which people choose, get scrypt instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiKey, User, utcnow

ROLES = ("ehr", "coder", "admin")
USER_ROLES = ("coder", "admin")
# Each role may do everything the roles before it may.
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AuthError(Exception):
    code = "invalid_auth_input"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    """Who is calling: `name` goes into the audit log as `kind:name`."""

    kind: str  # apikey | user
    name: str
    role: str
    key_id: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}" + (f"#{self.key_id}" if self.key_id else "")

    def may(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    name: str
    role: str
    key: str


def _secret_hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_api_key(session: Session, name: str, role: str) -> CreatedKey:
    """Store a new key and return it; the full key is never retrievable again."""
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    name = name.strip()
    if not name:
        raise AuthError("a key needs a non-empty name")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    session.add(ApiKey(key_id=key_id, name=name, role=role, salt=salt, secret_hash=_secret_hash(salt, secret)))
    session.flush()
    return CreatedKey(key_id=key_id, name=name, role=role, key=f"nc_{key_id}_{secret}")


def parse_key(key: str) -> tuple[str, str] | None:
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "nc" or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1], parts[2]


def verify_api_key(session: Session, key: str) -> Principal | None:
    """The principal a key stands for, or None when it is malformed, unknown or revoked."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _secret_hash(row.salt, secret)):
        return None
    return Principal(kind="apikey", name=row.name, role=row.role, key_id=row.key_id)


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(session: Session, key_id: str) -> bool:
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return True


# ---- users -----------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    enc = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt).decode()}${enc(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got, base64.b64decode(digest))


def create_user(session: Session, username: str, role: str, password: str) -> User:
    if role not in USER_ROLES:
        raise AuthError(f"unknown role {role!r}; use one of {', '.join(USER_ROLES)}")
    username = username.strip()
    if not username or len(username) > 100:
        raise AuthError("a username needs 1 to 100 characters")
    if len(password) < 8:
        raise AuthError("a password needs at least 8 characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AuthError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password), created_at=utcnow())
    session.add(user)
    session.flush()
    return user


_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'A' * 24}${'A' * 44}"


def authenticate_user(session: Session, username: str, password: str) -> Principal | None:
    """The principal for a UI login, or None when the name or password is wrong."""
    user = session.scalar(select(User).where(User.username == username, User.is_active))
    if user is None:
        # Spend the same scrypt work as for a real user, so timing does not tell which names exist.
        check_password(password, _DUMMY_HASH)
        return None
    if not check_password(password, user.password_hash):
        return None
    return Principal(kind="user", name=user.username, role=user.role)


def as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
