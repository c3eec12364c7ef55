"""Response headers every page carries: the Content-Security-Policy and its companions (issue 8).

A dozen lines of our own rather than Flask-Talisman, which is unmaintained. The policy allows
scripts, styles, fonts, workers and connections from this origin only, and images also as
`data:` and `blob:` (crew.js previews a photo before it uploads). No page of ours has an inline
script, a `style="…"` attribute or an `on…=` handler, and none may: htmx's own indicator style
sheet is switched off in base.html and its rules live in closeout.css.
"""
from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
    "base-uri 'self'",
))
# What people uploaded, served back: if a browser ever took a photo for a page, it runs and loads nothing.
UPLOADED_CONTENT_POLICY = "default-src 'none'; img-src 'self'; frame-ancestors 'none'; sandbox"
UPLOADED_CONTENT_ENDPOINTS = frozenset({"photos.original", "photos.web", "photos.thumbnail"})
# The demo outbox shows caught emails in a sandboxed srcdoc frame, which inherits this policy;
# emails can only be styled inline, so that one development-only page may apply inline styles.
INLINE_STYLE_ENDPOINTS = frozenset({"demo.outbox_message"})
DEFAULT_REFERRER_POLICY = "same-origin"  # our URLs name jobs and clients: never sent to another site


def content_security_policy(endpoint, mimetype):
    """The policy for a response of this endpoint and type; None for a PDF."""
    if mimetype == "application/pdf":
        # Chromium shows a PDF in a plugin frame that a sandbox or object-src 'none' would block, and
        # a PDF runs none of our scripts; nosniff, no-referrer and X-Frame-Options still apply.
        return None
    if endpoint in UPLOADED_CONTENT_ENDPOINTS:
        return UPLOADED_CONTENT_POLICY
    if endpoint in INLINE_STYLE_ENDPOINTS:
        return CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    return CONTENT_SECURITY_POLICY


def init_app(app):
    """Add the security headers to every response, and trust the configured number of proxies."""
    proxies = app.config.get("TRUSTED_PROXY_COUNT", 0)
    if proxies:
        # Behind a proxy, remote_addr is the proxy's: the sign-in limits need the client's address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    hsts_seconds = app.config.get("HSTS_SECONDS", 0)

    @app.after_request
    def add_security_headers(response):
        headers = response.headers
        # setdefault: a blueprint that knows better (customers' /d/ links: no-referrer) has set its own.
        for name, value in security_headers(request.endpoint, response.mimetype, hsts_seconds=hsts_seconds):
            headers.setdefault(name, value)
        return response


def security_headers(endpoint, mimetype, *, hsts_seconds=0):
    """The (name, value) pairs a response of this endpoint and type carries (the board's poll sends them itself)."""
    headers = []
    policy = content_security_policy(endpoint, mimetype)
    if policy is not None:
        headers.append(("Content-Security-Policy", policy))
    headers += [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                ("Referrer-Policy", DEFAULT_REFERRER_POLICY), ("Cross-Origin-Opener-Policy", "same-origin")]
    if hsts_seconds:
        headers.append(("Strict-Transport-Security", f"max-age={hsts_seconds}"))
    return headers
