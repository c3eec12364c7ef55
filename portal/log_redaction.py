"""Secrets never reach a log line: Stripe keys, webhook secrets, API tokens, customers' link tokens, passwords.

Installed as the process's log record factory, so every logger (Flask's, werkzeug's and gunicorn's access
logs, the Stripe SDK's, RQ's) and every handler (files, stderr, pytest's caplog) sees the redacted text; a
filter on one handler would miss records that other handlers print. The message, its arguments and any
traceback are formatted once, redacted, and stored back on the record (issue 8, docs/reliability.md).
"""
import logging
import re

MASK = "[redacted]"
CONFIG_SECRETS = ("SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SMTP_PASSWORD")
PATTERNS = (
    # Stripe secret and restricted keys, webhook signing secrets (https://docs.stripe.com/keys).
    (re.compile(r"\b(sk|rk)_(test|live)_[A-Za-z0-9]{8,}"), MASK),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), MASK),
    # Our API tokens (auth.models.ApiToken.issue) and any bearer credential in a header dump.
    (re.compile(r"\bco_[A-Za-z0-9_-]{20,}"), MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # Customers' document links /d/<token>: the token is the whole credential, so access logs keep the path only.
    (re.compile(r"/d/[A-Za-z0-9_-]{16,}"), f"/d/{MASK}"),
    # A password or token in a query string or form body someone logged.
    (re.compile(r"(?i)\b(password|passwd|secret|token|api_key)=[^&\s'\"]+"), rf"\1={MASK}"),
)
_literals = set()  # the configured secrets' exact values, whatever their shape


def redact(text):
    """The text with every known secret shape and configured secret value masked."""
    if not text:
        return text
    for literal in _literals:
        text = text.replace(literal, MASK)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redacted_record(factory):
    def make_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed format string: logging itself reports those
            return record
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    make_record.redacts_secrets = True
    return make_record


def init_app(app):
    """Remember this app's configured secrets and make sure the record factory redacts them."""
    for name in CONFIG_SECRETS:
        for value in str(app.config.get(name) or "").split(","):  # webhook secrets rotate as a comma list
            if len(value.strip()) >= 8:  # a short value would mask ordinary words
                _literals.add(value.strip())
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacts_secrets", False):
        logging.setLogRecordFactory(_redacted_record(factory))
