"""People who log in, and tokens other systems use."""
import enum
import hashlib
import secrets

from flask import current_app, has_app_context
from flask_login import UserMixin
from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


class Role(str, enum.Enum):
    CREW = "crew"
    OFFICE = "office"
    OWNER = "owner"
    PARTNER = "partner"


STAFF_ROLES = (Role.OFFICE, Role.OWNER)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    @property
    def is_active(self):
        return self.active

    @property
    def is_staff(self):
        return self.role in STAFF_ROLES

    def set_password(self, password):
        method = current_app.config["PASSWORD_HASH_METHOD"] if has_app_context() else "scrypt"
        self.password_hash = generate_password_hash(password, method=method)

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)

    def __repr__(self):
        return f"<User {self.email} {self.role.value}>"


class ApiToken(db.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_used_at = mapped_column(UTCDateTime, nullable=True)
    revoked_at = mapped_column(UTCDateTime, nullable=True)

    @staticmethod
    def hash(raw):
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, name):
        """A new token and its raw value, which is shown once and never stored."""
        raw = "co_" + secrets.token_urlsafe(32)
        return cls(name=name, token_hash=cls.hash(raw), prefix=raw[:10]), raw


class UserSession(db.Model):
    """One signed-in browser: the server-side half of a cookie session, so that it can be ended.

    A signed cookie cannot be revoked by itself; the cookie carries a random key whose SHA-256
    is this row's, and the user loader accepts a cookie only while its row is not ended.
    """

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    ended_at = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
