"""Bearer-token authentication for the JSON API; session cookies never authenticate it."""
from datetime import timedelta
from functools import wraps

from flask import g, jsonify, request
from sqlalchemy import select

from portal.auth.models import ApiToken
from portal.extensions import db
from portal.timeutil import utcnow

# last_used_at is for spotting dead or leaked tokens; minute precision is plenty and spares a write per call.
LAST_USED_PRECISION = timedelta(minutes=1)


def bearer_token():
    """The raw token from `Authorization: Bearer <token>`, or None."""
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    raw = raw.strip()
    return raw if scheme.lower() == "bearer" and raw else None


def find_active_token(raw):
    """The unrevoked token with this raw value, or None.

    Only the SHA-256 is stored and compared in SQL, so response time does not depend on how
    much of a guessed token matches.
    """
    return db.session.scalar(
        select(ApiToken).where(ApiToken.token_hash == ApiToken.hash(raw), ApiToken.revoked_at.is_(None))
    )


def unauthorized(raw):
    """401 in the API's error shape, with the challenge RFC 6750 asks for."""
    message = "Send a valid API token: Authorization: Bearer <token>." if raw else "Send an API token: Authorization: Bearer <token>."
    response = jsonify(error={"status": 401, "message": message})
    response.status_code = 401
    challenge = 'Bearer realm="closeout"'
    if raw:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def token_required(view):
    """Run the view only for a valid, unrevoked token, which is then `g.api_token`."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        raw = bearer_token()
        token = find_active_token(raw) if raw else None
        if token is None:
            return unauthorized(raw)
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
            token.last_used_at = now
            db.session.commit()  # on its own, so a request that is refused later still counts as use
        g.api_token = token
        return view(*args, **kwargs)

    return wrapped
