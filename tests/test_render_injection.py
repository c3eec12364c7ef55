"""Markup and URLs typed into a job (issue 8): they render as text in the proof PDF, the customer's
email and our pages, and nothing they name is ever fetched.

A local HTTP server stands in for the cloud metadata address (169.254.169.254) and for any other
host: it counts every request. The hostile text names it in `<img src>`, `<link href>`, CSS
`url()` and `@import`, beside `file:///etc/passwd` and the real metadata address, whose
connections are recorded at the socket. A control shows the counter does count: xhtml2pdf left
to its own devices fetches the same markup.
"""
import html
import io
import re
import socket
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pypdf import PdfReader
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import PERMISSIVE_POLICY

from portal.audit.services import Actor
from portal.billing.emails import send_bill_email
from portal.billing.proof import ProofResources, html_to_pdf, render_proof
from portal.extensions import limiter
from tests import factories
from tests.fixtures.billing import PAY_URL, billed_record

METADATA_HOST = "169.254.169.254"
PASSWD_LINE = "root:x:0:0"  # what /etc/passwd would put on the page if it were ever read


class CountingServer:
    """An HTTP server that answers everything with a small PNG and counts what it was asked for."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                body = Path(__file__).resolve().parents[1].joinpath("portal/static/logo.png").read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def stand_in():
    with CountingServer() as server:
        yield server


@pytest.fixture
def metadata_connections(monkeypatch):
    """Connections attempted to the metadata address (refused); every other connection goes through."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] == METADATA_HOST:
            attempts.append(address)
            raise OSError("the metadata address is out of bounds in tests")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def hostile_fields(url):
    """Short lines (each fits one line of the PDF, so its text can be compared whole) for every field we print."""
    notes = [
        f'<img src="{url}/note-img">',
        f'<link rel="stylesheet" href="{url}/note.css">',
        f'<div style="background:url({url}/note-bg)">x</div>',
        f'<style>@import url("{url}/import.css");</style>',
        '<img src="file:///etc/passwd">',
        f'<img src="http://{METADATA_HOST}/latest/meta-data/">',
        "<script>alert(1)</script> & <b>bold</b>",
    ]
    items = [
        (f'<a href="http://{METADATA_HOST}/">Valve</a>', "1", 5000),
        (f'<img src={url}/item-img onerror=alert(1)>', "2", 1250),
    ]
    scope = f'<link rel=stylesheet href=file:///etc/passwd>Fix it\n<iframe src="{url}/frame"></iframe>'
    return notes, items, scope


def pdf_text(pdf):
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def pdf_image_count(pdf):
    return sum(1 for page in PdfReader(io.BytesIO(pdf)).pages
               for ref in page["/Resources"].get("/XObject", {}).values() if ref.get_object()["/Subtype"] == "/Image")


@pytest.fixture
def hostile_job(db, stand_in):
    notes, items, scope = hostile_fields(stand_in.url)
    client = factories.client(name=f'<img src="{stand_in.url}/client-name">Harbor',
                              billing_emails=["ap@harbor.example"])
    billed = billed_record(client, notes=notes, items=items, scope=scope)
    return billed, notes, items, scope


# --- The proof PDF --------------------------------------------------------------------------------

def test_the_proof_prints_every_hostile_field_as_text_and_fetches_nothing(hostile_job, stand_in,
                                                                          metadata_connections):
    billed, notes, items, scope = hostile_job

    pdf = render_proof(billed.record.trigger)

    text = pdf_text(pdf)
    for typed in [*notes, *(description for description, _, _ in items), *scope.splitlines(),
                  billed.job.client.name]:
        assert " ".join(typed.split()) in text, typed
    assert stand_in.hits == [] and metadata_connections == []
    assert PASSWD_LINE not in text and PASSWD_LINE.encode() not in pdf
    assert pdf_image_count(pdf) == 1  # the logo, and nothing the text named


def test_even_unescaped_markup_reaches_nothing_through_our_link_callback(hostile_job, stand_in,
                                                                         metadata_connections):
    """Defence in depth: if escaping ever failed, the link_callback and resource policy still fetch nothing."""
    billed, notes, _, scope = hostile_job
    raw = f"<html><head>{notes[1]}{notes[3]}</head><body>{''.join(notes)}{scope}</body></html>"

    pdf = html_to_pdf(raw, ProofResources(billed.job))

    assert stand_in.hits == [] and metadata_connections == []
    assert PASSWD_LINE.encode() not in pdf and pdf_image_count(pdf) == 0


def test_the_counter_counts_xhtml2pdf_left_alone_does_fetch(hostile_job, stand_in):
    """The control: without our callback and policy, the same markup is fetched; so zero above means zero."""
    _, notes, _, _ = hostile_job
    output = io.BytesIO()

    pisa.CreatePDF(f"<html><body>{notes[0]}</body></html>", dest=output, resource_policy=PERMISSIVE_POLICY)

    assert stand_in.hits == ["/note-img"]


# --- The customer's email -------------------------------------------------------------------------

CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)|@import\s+["']([^"']+)""", re.I)


class ReferenceParser(HTMLParser):
    """Collects what a browser or mail client would load or open: URL attributes, and url()/@import in CSS."""

    URL_ATTRIBUTES = {"src", "href", "background", "srcset", "poster", "data", "action", "formaction"}

    def __init__(self):
        super().__init__()
        self.found, self.in_style = [], False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and name in self.URL_ATTRIBUTES:
                self.found.append(value)
            elif value and name == "style":
                self.found += css_urls(value)
        self.in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False

    def handle_data(self, data):
        if self.in_style:
            self.found += css_urls(data)


def css_urls(css):
    return [first or second for first, second in CSS_URL.findall(css)]


def remote_references(markup):
    parser = ReferenceParser()
    parser.feed(markup)
    parser.close()
    return parser.found


def test_the_email_shows_every_hostile_field_as_text_and_references_nothing_of_it(
        db, hostile_job, stand_in, metadata_connections, smtp_server):
    billed, notes, items, scope = hostile_job

    send_bill_email(billed.record, by=Actor.system("tests"))

    message = smtp_server.messages[0]
    body = message.get_body(("html",)).get_content()
    plain = message.get_body(("plain",)).get_content()
    for typed in [*notes, *(description for description, _, _ in items), *scope.splitlines()]:
        assert html.escape(typed, quote=True).replace("&#x27;", "&#39;") in body.replace("&#34;", "&quot;"), typed
        assert typed in plain, typed
    for url in remote_references(body):
        assert url.startswith("cid:") or url == PAY_URL, url
    assert "<script" not in body and "<iframe" not in body and "<link" not in body
    assert stand_in.url not in " ".join(remote_references(body))
    assert stand_in.hits == [] and metadata_connections == []


def test_the_reference_scan_finds_what_a_mail_client_would_load():
    """The control for the scan above."""
    markup = ('<img src="http://a/1"><link href=http://a/2><td background="http://a/3">'
              '<p style="background:url(http://a/4)"><style>@import "http://a/5";</style>')
    assert remote_references(markup) == ["http://a/1", "http://a/2", "http://a/3", "http://a/4", "http://a/5"]
    assert remote_references("<p>&lt;img src=&#34;http://a/6&#34;&gt;</p>") == []  # escaped text loads nothing


# --- Our own pages --------------------------------------------------------------------------------

def test_the_office_and_crew_pages_show_the_text_and_no_markup(db, hostile_job, stand_in, login, office):
    billed, notes, _, _ = hostile_job
    job = billed.job
    page = login(office).get(f"/office/jobs/{job.id}").get_data(as_text=True)

    for typed in notes:
        assert html.escape(typed).replace("&#x27;", "&#39;") in page.replace("&#34;", "&quot;"), typed
    assert stand_in.url not in " ".join(remote_references(page))


@pytest.mark.browser
def test_a_browser_showing_the_job_fetches_nothing_the_text_names(app, db, hostile_job, stand_in, live_server,
                                                                  office, browser):
    limiter.reset()
    billed, _, _, _ = hostile_job
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=email]", office.email)
        page.fill("input[name=password]", factories.PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"/office/jobs/{billed.job.id}")
        page.wait_for_load_state("networkidle")
        shown = page.inner_text("main")
    finally:
        context.close()

    assert '<img src="file:///etc/passwd">' in shown
    assert stand_in.hits == []
