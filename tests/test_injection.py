"""SQL injection attempts in every filter and search field (issue 8, Security: Injection).

The routes are taken from the app's URL map: every GET route is sent every payload under every filter
name the app knows, and each route whose view reads the query string must be listed in FILTERS with its
parameters (read from its form class where it has one), so a new filter cannot ship untested.
"""
import inspect
import json

import pytest
from sqlalchemy import inspect as schema_inspect
from sqlalchemy import select, text
from wtforms.fields.core import UnboundField

from portal.api.schemas import JOB_FILTER_PARAMS, PAGE_PARAMS
from portal.auth.models import ApiToken
from portal.dashboard.forms import AuditFilterForm, DashboardFilterForm, ExportForm
from portal.jobs.models import Job
from portal.office.forms import JobFilterForm
from portal.referrals.forms import LedgerFilterForm
from tests import factories
from tests.test_authorization import API, PUBLIC_TOKEN, access_for, objects_for

PAYLOADS = (
    "' OR 1=1 --",
    "' OR '1'='1",
    "1; DROP TABLE jobs; --",
    "1'; DROP TABLE clients; --",
    "%' UNION SELECT id, email, password_hash FROM users --",
    "1) OR (1=1",
    "\u2019 OR 1=1 --",  # a typographic quote, which some drivers once folded to '
    "\uff07 OR \uff11=\uff11 --",  # full-width quote and digits
    "abc\x00def",  # PostgreSQL refuses NUL in text: it must not turn into a 500
    "\\' OR 1=1 --",
    "%",
    "_",
    "A" * 10_000,
    "9999-12-31",
    "0001-01-01",
    "9999-12-31T23:59:59Z",
    "-1",
    "0",
    "2147483648",
    "99999999999999999999999999",
    "1e309",
)
BENIGN = "zz no match"
MAY_MATCH = {"0"}  # a real search term: every job number holds a 0

# Each route whose view reads the query string: the role that reaches it, and the parameters it reads.
FILTERS = {
    "office.jobs": ("owner", ["page"]),
    "office.clients": ("owner", ["q", "page"]),
    "office.site_options": ("owner", ["client_id"]),
    "office.new_job": ("owner", ["client_id"]),
    "office.line_items": ("owner", ["edit"]),
    "dashboard.page": ("owner", []),
    "dashboard.exports": ("owner", []),
    "dashboard.export": ("owner", []),
    "dashboard.audit_log": ("owner", ["page"]),
    "partners.ledger": ("owner", ["page"]),
    "partners.ledger_csv": ("owner", []),
    "api.list_jobs": (API, sorted(JOB_FILTER_PARAMS)),
    "api.list_clients": (API, sorted(PAGE_PARAMS)),
}
FORMS = {"office.jobs": JobFilterForm, "dashboard.page": DashboardFilterForm, "dashboard.exports": ExportForm,
         "dashboard.export": ExportForm, "dashboard.audit_log": AuditFilterForm, "partners.ledger": LedgerFilterForm,
         "partners.ledger_csv": LedgerFilterForm}
# Routes whose view mentions the query string for something other than a filter.
NOT_FILTERS = {"auth.login"}  # `next`, covered by tests/test_sessions.py's open-redirect cases


def form_fields(form_class):
    """The names a GET form reads from the query string."""
    return sorted(name for name in dir(form_class) if isinstance(getattr(form_class, name), UnboundField))


def parameters(endpoint):
    return sorted(set(FILTERS[endpoint][1]) | set(form_fields(FORMS[endpoint]) if endpoint in FORMS else ()))


ALL_PARAMETERS = sorted({name for endpoint in FILTERS for name in parameters(endpoint)})


def reads_query_string(view):
    source = inspect.getsource(inspect.unwrap(view))
    return "request.args" in source


def test_every_route_that_reads_the_query_string_is_listed(app):
    missing = sorted(endpoint for endpoint, view in app.view_functions.items()
                     if endpoint not in FILTERS and endpoint not in NOT_FILTERS and reads_query_string(view))
    assert missing == [], f"routes reading request.args with no injection entry: {missing}"
    unknown = sorted(set(FILTERS) - set(app.view_functions))
    assert unknown == [], f"FILTERS names routes that no longer exist: {unknown}"


@pytest.fixture
def world(db, crew, office, owner, partner):
    values = objects_for(crew)
    for name in ("Acme Gutters", "O'Brien & Sons"):  # a real apostrophe in the data, too
        factories.job(factories.client(name=name), crew=[crew], items=[("Labor", "1", 8500)])
    token, raw = ApiToken.issue("injection")
    db.session.add(token)
    factories.payout(factories.partner(partner), amount=850)
    db.session.commit()
    return values, {"owner": owner, "office": office, "crew": crew, "partner": partner}, raw


def snapshot(db):
    """Every table's name and row count, and a digest of the rows people rely on."""
    tables = sorted(schema_inspect(db.engine).get_table_names())
    counts = {table: db.session.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one() for table in tables}
    # Not api_tokens: each API call moves its last_used_at.
    digests = {table: db.session.execute(text(
        f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")).scalar_one()
        for table in ("jobs", "clients", "users", "billing_records", "payouts", "job_line_items")}
    db.session.rollback()
    return counts, digests


class Requester:
    """GETs as the role a route is for, returning (status, rows seen)."""

    def __init__(self, app, login, users, raw_token):
        from portal.extensions import db

        self.app = app
        self.clients = {role: login(user) for role, user in users.items()}
        self.clients["anonymous"] = app.test_client()
        self.raw_token = raw_token
        self.job_numbers = frozenset(db.session.scalars(select(Job.number)))

    def get(self, role, url, query):
        from portal.extensions import db

        headers = {}
        if role == API:
            client, headers = self.clients["anonymous"], {"Authorization": f"Bearer {self.raw_token}"}
        else:
            client = self.clients[role]
        try:
            response = client.get(url, query_string=query, headers=headers)
            body = response.get_data().decode("utf-8", "replace")
            status = response.status_code
            response.close()
        except Exception as error:  # noqa: BLE001  (the test reports it as the 500 it would have been)
            db.session.rollback()
            return 500, f"{type(error).__name__}: {str(error)[:300]}"
        if status >= 500:
            db.session.rollback()
        return status, self.rows_seen(body, response.mimetype)

    def rows_seen(self, body, mimetype):
        """What identifies a row in an answer: the jobs' numbers in pages and CSVs, ids in the API's lists."""
        if mimetype == "application/json":
            payload = json.loads(body)
            return frozenset(str(row.get("id")) for row in payload.get("data", []) if isinstance(row, dict))
        return frozenset(number for number in self.job_numbers if number in body)


def role_for(endpoint):
    if endpoint in FILTERS:
        return FILTERS[endpoint][0]
    allowed = access_for(endpoint)
    if allowed == API:
        return API
    if allowed == PUBLIC_TOKEN:
        return "anonymous"
    return next((role for role in ("owner", "crew", "partner") if role in allowed), "anonymous")


@pytest.fixture
def requester(app, login, world):
    values, users, raw = world
    return Requester(app, login, users, raw)


def test_payloads_in_every_filter_return_no_extra_rows_and_change_nothing(app, db, world, requester):
    values, _, _ = world
    before = snapshot(db)
    failures, tried = [], 0
    for endpoint in sorted(FILTERS):
        role = role_for(endpoint)
        rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == endpoint)
        url = rule.build(values, append_unknown=False)[1]
        for name in parameters(endpoint):
            benign_status, benign_rows = requester.get(role, url, {name: BENIGN})
            if benign_status >= 500:
                failures.append(f"{url}?{name}=<benign>: {benign_status} {benign_rows}")
                continue
            for payload in PAYLOADS:
                tried += 1
                status, rows = requester.get(role, url, {name: payload})
                if status >= 500:
                    failures.append(f"{url}?{name}={payload[:40]!r}: {status} {rows}")
                elif status < 300 and payload not in MAY_MATCH and not rows <= benign_rows:
                    failures.append(f"{url}?{name}={payload[:40]!r}: extra rows {sorted(rows - benign_rows)}")
    assert failures == [], "\n".join(failures)
    assert tried >= 1000, tried
    after = snapshot(db)
    assert after[0] == before[0]
    assert {table: (before[1][table], digest) for table, digest in after[1].items() if digest != before[1][table]} == {}


def test_like_wildcards_are_searched_for_not_run(app, world, requester):
    """`%` and `_` alone find the rows that contain them, not every row."""
    status, rows = requester.get("owner", "/office/jobs", {"q": "%"})
    assert status == 200 and rows == frozenset()
    status, rows = requester.get("owner", "/office/clients", {"q": "_"})
    assert status == 200
    status, rows = requester.get("owner", "/office/jobs", {"q": "O'Brien"})
    assert status == 200 and len(rows) == 1  # a real apostrophe still finds its row


def test_every_get_route_survives_every_payload_in_every_filter_name(app, db, world, requester):
    values, _, _ = world
    before = snapshot(db)
    failures, tried = [], 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if "GET" not in rule.methods or rule.endpoint == "static" or access_for(rule.endpoint) is None:
            continue
        url = rule.build(values, append_unknown=False)[1]
        for payload in PAYLOADS:
            tried += 1
            status, detail = requester.get(role_for(rule.endpoint), url,
                                           {name: payload for name in ALL_PARAMETERS})
            if status >= 500:
                failures.append(f"{url} with {payload[:40]!r} everywhere: {status} {detail}")
    assert failures == [], "\n".join(failures)
    assert tried >= 500, tried
    after = snapshot(db)
    assert after[0] == before[0]
    assert {table: (before[1][table], digest) for table, digest in after[1].items() if digest != before[1][table]} == {}


@pytest.mark.parametrize("url", ["/office/jobs/{id}", "/office/clients/{id}", "/api/v1/jobs/{id}",
                                 "/api/v1/clients/{id}", "/office/jobs/{id}/items"])
@pytest.mark.parametrize("row_id", ["-1", "0", "2147483648", "99999999999999999999999999", "1%20OR%201=1"])
def test_negative_and_huge_ids_in_paths_are_not_found(world, requester, url, row_id):
    role = API if url.startswith("/api/") else "owner"
    status, _ = requester.get(role, url.format(id=row_id), {})
    assert status == 404


def test_a_nul_in_a_posted_form_is_refused_and_stores_nothing(db, world, login):
    values, users, _ = world
    browser = login(users["office"])
    before = snapshot(db)
    response = browser.post_form(f"/office/jobs/{values['job_id']}/notes", {"body": "a\x00b"})
    assert response.status_code == 400
    assert snapshot(db) == before
