"""`make demo`'s SMTP catcher: an aiosmtpd server on loopback that keeps every message in instance/outbox/.

Each message is stored as it arrived, as `<UTC time>-<random>.eml`, with the envelope prepended
as `X-MailFrom` / `X-RcptTo` headers (Bcc copies appear nowhere else). The development-only
outbox page (portal/demo/views.py) reads them back. aiosmtpd is a development dependency: only
the demo runner and the tests import this module.
"""
import os
import secrets
import tempfile
from pathlib import Path

from aiosmtpd.controller import Controller

from portal.timeutil import utcnow

LOOPBACK = "127.0.0.1"


class LoopbackController(Controller):
    """aiosmtpd's threaded Controller, able to listen on port 0 (a free port the system picks)."""

    def _trigger_server(self):
        # Controller connects to self.port to finish starting; with port 0 that is the port actually bound.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class OutboxHandler:
    """Writes each message it receives into the outbox directory."""

    def __init__(self, outbox_dir):
        self.outbox_dir = Path(outbox_dir)

    async def handle_DATA(self, server, session, envelope):
        envelope_headers = (f"X-MailFrom: {envelope.mail_from}\r\n"
                            f"X-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        store_message(self.outbox_dir, envelope_headers + envelope.original_content)
        return "250 Message accepted for delivery"


def store_message(outbox_dir, raw):
    """Write one raw message under a new, sortable name; returns the name."""
    name = f"{utcnow():%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}.eml"
    # Written aside and renamed, so the outbox page never reads half a message.
    handle, temp_name = tempfile.mkstemp(dir=outbox_dir, prefix=".", suffix=".part")
    with os.fdopen(handle, "wb") as temp:
        temp.write(raw)
    os.replace(temp_name, Path(outbox_dir) / name)
    return name


def start_mailcatcher(outbox_dir, port=0):
    """Start the catcher on 127.0.0.1 in a background thread; returns (controller, port)."""
    Path(outbox_dir).mkdir(parents=True, exist_ok=True)
    controller = LoopbackController(OutboxHandler(outbox_dir), hostname=LOOPBACK, port=port)
    controller.start()
    return controller, controller.port
