"""Dashboard and lists at 100k jobs: render times and statements per page (targets: dashboard < 300 ms,
the board's and the job list's first page < 100 ms, a constant number of queries per page).

A scratch PostgreSQL database gets the demo (`seed_demo`) and then the large book
(`seed-demo --jobs`, bulk inserts): first SMALL_BOOK jobs, where each page's statements are counted,
then the rest up to JOBS, where they are counted again and each page is timed. Pages are requested
in-process through Flask's test client as the signed-in demo owner, so a time covers routing,
the session, every query and the template, but not HTTP or a network.
"""
import os
import statistics
import time

from sqlalchemy import event, text

from bench._payments_setup import scratch_environment
from bench.report import Result

TITLE = "Dashboard at 100k jobs: render time and statements per page"
JOBS = int(os.environ.get("DASHBOARD_BENCH_JOBS", "100000"))
SMALL_BOOK = 1000
WARMUP, RUNS = 2, 15
PAGES = [  # (name, url, target ms)
    ("Dashboard, this month (owner)", "/office/dashboard", 300),
    ("Dashboard, last 365 days (owner)", "/office/dashboard?period=range&start={year_ago}&end={today}", 300),
    ("Dashboard, this month, one crew member", "/office/dashboard?crew={crew_id}", 300),
    ("Board, first page", "/office/board", 100),
    ("Job list, first page", "/office/jobs", 100),
    ("Job list, the overdue figure's jobs", "/office/jobs?figure=overdue&period_from={today}&period_to={today}", 100),
    ("Audit log, first page (owner)", "/office/dashboard/audit", 100),
]


class Statements:
    """Counts the statements the engine sends while active."""

    def __init__(self, engine):
        self.engine, self.count = engine, 0

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self.seen)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self.seen)

    def seen(self, *args):
        self.count += 1


def owner_browser(app):
    from portal.demo.seed import DEMO_PASSWORD, OWNER_EMAIL

    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
    answer = browser.post("/login", data={"email": OWNER_EMAIL, "password": DEMO_PASSWORD, "csrf_token": token})
    assert answer.status_code == 302, answer.status_code
    return browser


def urls(app):
    from datetime import timedelta

    from sqlalchemy import select

    from portal.auth.models import Role, User
    from portal.dashboard.services import business_today
    from portal.extensions import db

    with app.app_context():
        today = business_today()
        crew_id = db.session.scalar(select(User.id).where(User.role == Role.CREW).order_by(User.id))
    values = {"today": today.isoformat(), "year_ago": (today - timedelta(days=364)).isoformat(), "crew_id": crew_id}
    return [(name, url.format(**values), target) for name, url, target in PAGES]


def statements_per_page(app, browser, pages):
    from portal.extensions import db

    counts = {}
    with app.app_context():
        engine = db.engine
    for name, url, _ in pages:
        with Statements(engine) as counter:
            response = browser.get(url)
        assert response.status_code == 200, (url, response.status_code)
        counts[name] = counter.count
    return counts


def timings(browser, url):
    for _ in range(WARMUP):
        browser.get(url)
    taken = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = browser.get(url)
        response.get_data()
        taken.append((time.perf_counter() - started) * 1000)
    taken.sort()
    return statistics.median(taken), taken[int(0.9 * (len(taken) - 1))]


def load_average():
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def run(jobs=JOBS):
    with scratch_environment("dashboard") as (app, _env):
        from portal.demo.book import seed_book
        from portal.demo.seed import seed_demo
        from portal.extensions import db

        with app.app_context():
            seed_demo()
            seed_book(SMALL_BOOK, seed=1)
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        browser = owner_browser(app)
        pages = urls(app)
        small = statements_per_page(app, browser, pages)
        with app.app_context():
            started = time.perf_counter()
            seed_book(jobs - SMALL_BOOK, seed=2)
            seed_seconds = time.perf_counter() - started
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        large = statements_per_page(app, browser, pages)
        load = load_average()
        results = [(name, target, *timings(browser, url)) for name, url, target in pages]
    constant = small == large
    figures = {"jobs": jobs, f"bulk seed of {jobs - SMALL_BOOK} jobs (s)": round(seed_seconds, 1),
               "load average before timing": load, "statements constant": constant}
    rows = []
    for name, target, median, p90 in results:
        met = median < target
        figures[f"{name}: median ms"] = round(median, 1)
        figures[f"{name}: statements"] = large[name]
        rows.append(f"| {name} | {median:.1f} | {p90:.1f} | {target} | {'met' if met else 'NOT met'} | "
                    f"{small[name]} | {large[name]} |")
    markdown = "\n".join([
        f"The demo plus {jobs} past jobs (`flask --app portal seed-demo --jobs {jobs}`: bulk inserts; "
        f"{jobs - SMALL_BOOK} of them took {seed_seconds:.0f} s here), about one billing record, line item, crew "
        "assignment and audit entry each, in a scratch PostgreSQL database after ANALYZE. Each page is requested "
        f"in-process through Flask's test client as the signed-in owner: {WARMUP} warm-up requests, then "
        f"{RUNS} timed (routing, session, queries and template; no HTTP). Statements are counted with an "
        f"SQLAlchemy `before_cursor_execute` listener at {SMALL_BOOK} jobs and again at {jobs}. "
        f"The machine is shared: load average {load} (1/5/15 min) just before timing.",
        "",
        f"| page | median ms | p90 ms | target ms | | statements at {SMALL_BOOK} jobs | statements at {jobs} jobs |",
        "|---|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        f"Statements per page constant whatever the row count: **{'yes' if constant else 'NO'}**.",
    ])
    return Result(TITLE, figures, markdown)
