"""The HTTP layer: a Flask app on Werkzeug's threaded server, with faults injected below the app.

Faults act in the request handler, before the app sees the request, so a reset really is a TCP reset, a hang
holds the connection open, and an injected 500 never touches state or idempotency keys.
"""

import json
import socket
import struct
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Flask, request
from werkzeug.serving import WSGIRequestHandler, make_server

from stripe_sandbox import api, controls, pages
from stripe_sandbox.money import format_amount

INJECTED_ERRORS = {
    "500": (500, {"error": {"type": "api_error",
                            "message": "An unknown error occurred (injected by stripe-sandbox)."}}),
    "429": (429, {"error": {"type": "invalid_request_error", "code": "rate_limit",
                            "message": "Request rate limit exceeded (injected by stripe-sandbox). "
                                       "Learn more about rate limits here https://stripe.com/docs/rate-limits."}}),
}


def create_app(sandbox):
    """The Flask app: the `/v1/` API, the `/_sandbox/` controls and the customer's pages."""
    app = Flask(__name__, static_folder=None)
    app.extensions["stripe_sandbox"] = sandbox
    app.register_blueprint(api.bp)
    app.register_blueprint(controls.bp)
    app.register_blueprint(pages.bp)
    app.add_template_filter(format_amount, "money")
    app.add_template_filter(lambda timestamp: datetime.fromtimestamp(timestamp, timezone.utc).strftime("%b %d, %Y"),
                            "date")

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(error):
        if request.path.startswith("/v1/"):
            return api.unrecognized_url()
        return error

    @app.errorhandler(500)
    def server_error(error):
        # Flask has already logged the traceback; answer in Stripe's shape so SDK clients see an APIError.
        return api.json_response({"error": {"type": "api_error",
                                            "message": f"stripe-sandbox failed: {error.original_exception!r}"}}, 500)

    return app


class FaultyRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, with armed faults applied before the request reaches the app."""

    def run_wsgi(self):
        path = urlsplit(self.path).path
        fault = None if path.startswith("/_sandbox/") else self.server.faults.take(self.command, path)
        if fault is None:
            return super().run_wsgi()
        self.log_message("injected fault %s on %s %s", fault.mode, self.command, path)
        if fault.mode == "reset":
            return self._reset_connection()
        if fault.mode == "hang":
            self.server.faults.hang(fault.hang_seconds)
            return super().run_wsgi()
        return self._send_injected_error(*INJECTED_ERRORS[fault.mode])

    def _reset_connection(self):
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client sees a reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _send_injected_error(self, status, body):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # unread request bytes would turn our close into a reset
        payload = json.dumps(body, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_injected_fault")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True


def build_server(sandbox, host, port):
    """A threaded HTTP server for the sandbox, bound and ready; port 0 picks a free port."""
    server = make_server(host, port, create_app(sandbox), threaded=True, request_handler=FaultyRequestHandler)
    server.faults = sandbox.faults
    return server
