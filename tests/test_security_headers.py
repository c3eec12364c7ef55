"""Cookies and headers (issue 8): CSP and friends on every response, HSTS and Secure cookies in production.

The routes come from the app's URL map, so a new page is checked without anyone listing it. The
templates are scanned for what the CSP would refuse (inline scripts, style attributes, on…=
handlers), and a real Chromium shows that the policy is enforced and that no page of ours breaks it.
"""
import re
import uuid
from pathlib import Path

import pytest
from werkzeug.routing import FloatConverter, IntegerConverter, UUIDConverter

from portal import create_app
from portal.config import Config
from portal.documents.services import issue_document_link
from portal.extensions import db as _db
from portal.extensions import limiter
from portal.security import CONTENT_SECURITY_POLICY, UPLOADED_CONTENT_ENDPOINTS, UPLOADED_CONTENT_POLICY
from tests import factories
from tests.fixtures.billing import billed_record

TEMPLATES = Path(__file__).resolve().parents[1] / "portal" / "templates"
# Never served to a browser as a page of ours: emails (mail clients only read inline styles) and the PDF's HTML.
NOT_WEB_PAGES = ("emails/", "billing/proof.html")
EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
REFUSED_BY_CSP = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "style attribute": re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I),
    "on…= handler": re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I),
    "hx-on attribute": re.compile(r"\shx-on", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
    "<style> element": re.compile(r"<style[\s>]", re.I),
    "htmx eval (js: value, [filter] trigger)": re.compile(
        r"""hx-(?:vals|vars)\s*=\s*["']\s*(?:js|javascript):|hx-trigger\s*=\s*["'][^"']*\[""", re.I),
}


def placeholder_url(rule):
    values = {}
    for name, converter in rule._converters.items():
        if isinstance(converter, IntegerConverter):
            values[name] = 1
        elif isinstance(converter, FloatConverter):
            values[name] = 1.0
        elif isinstance(converter, UUIDConverter):
            values[name] = uuid.uuid4()
        else:
            values[name] = "closeout.css" if rule.endpoint == "static" else "x" * 43
    return rule.build(values, append_unknown=False)[1]


def csp_problems(html):
    return [name for name, pattern in REFUSED_BY_CSP.items() if pattern.search(html)]


@pytest.fixture
def production_app(_migrated_app, monkeypatch):
    """The production config (Secure cookies, HSTS), on the test database."""
    app = create_app(Config())
    yield app
    with app.app_context():
        _db.engine.dispose()


# --- Headers ---------------------------------------------------------------------------------------

def test_every_route_answers_with_the_security_headers_whoever_asks(app, db, login, office, crew):
    browsers = {"anonymous": app.test_client(), "office": login(office), "crew": login(crew)}
    missing, checked = [], 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role, browser in browsers.items():
                response = browser.open(placeholder_url(rule), method=method)
                response.close()
                checked += 1
                for name, value in EVERY_RESPONSE.items():
                    if response.headers.get(name) != value:
                        missing.append(f"{method} {rule.rule} as {role} ({response.status_code}): {name}")
                expected_policy = (UPLOADED_CONTENT_POLICY if rule.endpoint in UPLOADED_CONTENT_ENDPOINTS
                                   else CONTENT_SECURITY_POLICY)
                if response.headers.get("Content-Security-Policy") != expected_policy:
                    missing.append(f"{method} {rule.rule} as {role} ({response.status_code}): CSP")
                if not response.headers.get("Referrer-Policy"):
                    missing.append(f"{method} {rule.rule} as {role}: Referrer-Policy")
    assert missing == [], "\n".join(missing)
    assert checked > 100


def test_error_pages_and_unknown_paths_carry_them_too(client):
    for response in (client.get("/no/such/page"), client.post("/login", data={}), client.get("/static/nothing.js")):
        assert response.status_code in (400, 404)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_send_no_referrer_to_other_sites_and_customer_links_send_none_at_all(app, db, client):
    billed = billed_record()
    token = issue_document_link(billed.record.trigger)
    _db.session.commit()

    assert client.get("/login").headers["Referrer-Policy"] == "same-origin"
    for url, status in ((f"/d/{token}", 200), ("/d/" + "x" * 43, 404)):  # a working link and a dead one
        with client.get(url) as response:
            assert response.status_code == status
            # The PDF itself carries no CSP (Chromium's viewer would be blocked); the 404 page does.
            assert ("Content-Security-Policy" in response.headers) == (status == 404)
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["Cache-Control"] == "private, no-store"
            assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_policy_allows_only_our_own_origin(client):
    policy = dict(part.strip().split(" ", 1) for part in client.get("/login").headers["Content-Security-Policy"].split(";"))

    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no other host
    assert policy["style-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'self'" and policy["base-uri"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["worker-src"] == "'self'"


def test_hsts_only_in_production(client, production_app):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    with production_app.app_context():
        response = production_app.test_client().get("/login")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


# --- Cookies ---------------------------------------------------------------------------------------

def session_cookie_of(response):
    cookies = [value for value in response.headers.getlist("Set-Cookie") if "closeout=" in value]
    assert len(cookies) == 1, response.headers.getlist("Set-Cookie")
    return cookies[0]


def test_the_session_cookie_is_httponly_and_samesite_lax(client, office):
    limiter.reset()
    response = client.post_form("/login", {"email": office.email, "password": factories.PASSWORD})

    cookie = session_cookie_of(response)
    assert response.status_code == 302
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the test config runs over plain http, like make demo


def test_in_production_it_is_also_secure_and_host_only(production_app, db, office):
    limiter.reset()
    with production_app.app_context():
        browser = production_app.test_client()
        page = browser.get("/login", base_url="https://localhost").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = browser.post("/login", base_url="https://localhost",
                                data={"email": office.email, "password": factories.PASSWORD, "csrf_token": token},
                                headers={"Referer": "https://localhost/login"})

    assert response.status_code == 302
    cookie = session_cookie_of(response)
    assert cookie.startswith("__Host-closeout=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Domain" not in cookie
    assert production_app.config["REMEMBER_COOKIE_SECURE"] and production_app.config["REMEMBER_COOKIE_HTTPONLY"]


# --- What the CSP would refuse ---------------------------------------------------------------------

def test_no_template_has_anything_the_csp_refuses():
    problems = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        relative = path.relative_to(TEMPLATES).as_posix()
        if relative.startswith(NOT_WEB_PAGES):
            continue
        found = csp_problems(path.read_text())
        if found:
            problems.append(f"{relative}: {', '.join(found)}")
    assert problems == [], "\n".join(problems)


def test_the_scan_finds_what_it_looks_for():
    """The control: each pattern catches its case, so an empty result above means something."""
    samples = ['<script>alert(1)</script>', '<p style="color:red">', '<img src=x onerror=alert(1)>',
               '<button hx-on:click="x()">', '<a href="javascript:alert(1)">', '<style>p{}</style>',
               '<input hx-trigger="keyup[key==\'Enter\']">']
    assert [csp_problems(sample) for sample in samples] == [[name] for name in REFUSED_BY_CSP]
    assert csp_problems('<script src="/static/crew.js" defer></script><p class="x">') == []


# --- In a real browser -----------------------------------------------------------------------------

@pytest.fixture
def chromium(browser):
    """The run's shared Chromium (tests/fixtures/browser.py)."""
    return browser


def signed_in_page(chromium, live_server, user):
    context = chromium.new_context(viewport={"width": 390, "height": 844}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.violations = []
    page.on("console", lambda message: "Content Security Policy" in message.text
            and page.violations.append(message.text))
    page.on("pageerror", lambda error: page.violations.append(str(error)))
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", factories.PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    return page


@pytest.mark.browser
def test_chromium_enforces_the_policy_and_our_pages_break_none_of_it(app, db, live_server, chromium, crew, office):
    limiter.reset()
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    pages = {crew: ["/crew/jobs", f"/crew/jobs/{job.id}"],
             office: ["/office/jobs", f"/office/jobs/{job.id}", "/office/clients", "/office/board"]}
    for user, urls in pages.items():
        page = signed_in_page(chromium, live_server, user)
        for url in urls:
            page.goto(url)
            page.wait_for_load_state("networkidle")
            assert page.evaluate("typeof window.htmx") == "object", url  # our scripts load under the policy
        assert page.violations == [], f"{user.role.value}: {page.violations}"
        # Markup slipped into the page cannot run: an inline handler is refused by the browser itself.
        page.evaluate("""document.body.insertAdjacentHTML('beforeend',
            '<img src="/static/logo.png?x" onload="window.closeoutInjected = 1">')""")
        page.wait_for_timeout(300)
        assert page.evaluate("window.closeoutInjected") is None
        assert any("Content Security Policy" in text for text in page.violations)  # the refusal just made
        page.context.close()


@pytest.mark.browser
def test_the_board_still_polls_under_the_policy(app, db, live_server, chromium, office):
    limiter.reset()
    page = signed_in_page(chromium, live_server, office)
    page.goto("/office/board")
    with page.expect_response(lambda response: "/office/board/poll" in response.url, timeout=10_000) as polled:
        pass
    assert polled.value.status in (200, 204)
    assert page.violations == []
    page.context.close()
