"""Stripe's deliveries, taken before Flask builds a request: the receiver's work is one INSERT and one Redis command.

The receiver needs none of what Flask does for a person's request (session, sign-in, CSRF, sign-in limits,
templates), and that machinery cost more CPU than verifying, storing and handing over the event together
(bench/webhook_ingest.py, issue 5 §7). So a POST with a body of known length is answered here, by the same
`receive_stripe_event` the view calls and with the same JSON and headers; anything else (another method, a
chunked or oversized body) goes on to Flask and the view, which answer as before (405, 413, …).
"""
import json

from portal.payments.services import SignatureRefused, receive_stripe_event


class StripeWebhookShortcut:
    """WSGI middleware in front of the app for `POST /webhooks/stripe`."""

    def __init__(self, app, wsgi_app, path):
        from portal.security import security_headers

        self.app = app
        self.wsgi_app = wsgi_app
        self.path = path
        self.max_length = app.config.get("MAX_CONTENT_LENGTH")
        self.headers = [("Content-Type", "application/json"),
                        *security_headers("payments.stripe_webhook", "application/json",
                                          hsts_seconds=app.config.get("HSTS_SECONDS", 0))]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == self.path and environ.get("REQUEST_METHOD") == "POST":
            length = environ.get("CONTENT_LENGTH") or ""
            if length.isdigit() and (self.max_length is None or int(length) <= self.max_length):
                status, answer = self.receive(environ["wsgi.input"].read(int(length)),
                                              environ.get("HTTP_STRIPE_SIGNATURE"))
                body = json.dumps(answer).encode()
                start_response(status, [*self.headers, ("Content-Length", str(len(body)))])
                return [body]
        return self.wsgi_app(environ, start_response)

    def receive(self, payload, header):
        """(status line, JSON answer), exactly as the view's."""
        with self.app.app_context():
            try:
                created = receive_stripe_event(payload, header)
            except SignatureRefused as error:
                return "400 BAD REQUEST", {"error": {"status": 400, "message": error.message}}
        return "200 OK", {"received": True, "duplicate": not created}


def init_app(app):
    """Put the receiver's shortcut in front of the app (after the payments blueprint is registered)."""
    (rule,) = app.url_map.iter_rules("payments.stripe_webhook")
    app.wsgi_app = StripeWebhookShortcut(app, app.wsgi_app, path=rule.rule)
