"""Reading the demo's caught mail (instance/outbox/*.eml) for the development-only outbox page.

Standard library only, unlike mailcatcher.py: create_app imports the demo views, and
production installs have no aiosmtpd.
"""
import base64
import email
import email.policy
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from flask import abort, current_app

from portal.config import INSTANCE_DIR

NAME_PATTERN = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}\.eml")
LIST_LIMIT = 200
# The caught HTML is shown in a sandboxed iframe that may load nothing from anywhere: remote
# images and styles in an email would be fetched by the person looking at it, so they are not.
FRAME_POLICY = ('<meta http-equiv="Content-Security-Policy" '
                "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">")
CID_SRC = re.compile(r"""(src\s*=\s*["']?)cid:([^"'\s>]+)""", re.IGNORECASE)


@dataclass
class CaughtPart:
    index: int
    content_type: str
    filename: str | None
    size: int
    inline: bool


def outbox_dir():
    """Where the demo's SMTP catcher writes (config DEMO_OUTBOX_DIR, default instance/outbox)."""
    return Path(current_app.config.get("DEMO_OUTBOX_DIR") or INSTANCE_DIR / "outbox")


def caught_messages():
    """Summaries of the newest caught messages, newest first."""
    directory = outbox_dir()
    if not directory.is_dir():
        return []
    names = sorted((path.name for path in directory.iterdir() if NAME_PATTERN.fullmatch(path.name)), reverse=True)
    return [summary(name, read_message(directory / name)) for name in names[:LIST_LIMIT]]


def get_caught_message(name):
    """The caught message with this name; 404 for anything that is not one."""
    if not NAME_PATTERN.fullmatch(name):
        abort(404)
    path = outbox_dir() / name
    if not path.is_file():
        abort(404)
    return read_message(path)


def read_message(path):
    return email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)


def summary(name, message):
    return dict(name=name, subject=message.get("Subject", ""), to=message.get("To", ""),
                delivered_to=message.get("X-RcptTo", ""), sent_at=message_date(message),
                attachments=sum(1 for part in leaf_parts(message) if part.get_content_disposition() == "attachment"))


def message_date(message):
    try:
        return parsedate_to_datetime(message["Date"]) if message["Date"] else None
    except (TypeError, ValueError):
        return None


def leaf_parts(message):
    """Every non-multipart part, in a stable order: a part's number is its index here."""
    return [part for part in message.walk() if not part.is_multipart()]


def parts_of(message):
    """Describe each part for the page."""
    described = []
    for index, part in enumerate(leaf_parts(message)):
        payload = part.get_payload(decode=True) or b""
        described.append(CaughtPart(index=index, content_type=part.get_content_type(), filename=part.get_filename(),
                                    size=len(payload), inline=part.get_content_disposition() != "attachment"))
    return described


def html_for_frame(message):
    """The HTML body with its cid: images made into data: URLs, behind a policy that loads nothing else."""
    body = message.get_body(("html",))
    if body is None:
        return None
    images = {}
    for part in leaf_parts(message):
        content_id = (part.get("Content-ID") or "").strip().strip("<>")
        if content_id and part.get_content_maintype() == "image":
            encoded = base64.b64encode(part.get_payload(decode=True) or b"").decode()
            images[content_id] = f"data:{part.get_content_type()};base64,{encoded}"
    html = CID_SRC.sub(lambda match: match.group(1) + images.get(match.group(2), "data:,"), body.get_content())
    return FRAME_POLICY + html


def text_body(message):
    body = message.get_body(("plain",))
    return body.get_content() if body is not None else None


def get_part(message, index):
    """(bytes, content type, file name) of one part; 404 when there is no such part."""
    parts = leaf_parts(message)
    if not 0 <= index < len(parts):
        abort(404)
    part = parts[index]
    return part.get_payload(decode=True) or b"", part.get_content_type(), part.get_filename() or f"part-{index}"
