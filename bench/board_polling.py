"""Board polling: an unchanged-board poll under 200 concurrent pollers, against a bare Flask response.

Both are served by one gunicorn (2 workers × 50 threads) on loopback: the portal, pointed at a
scratch PostgreSQL database holding a board of ~200 jobs, and a one-route Flask app mounted beside
it at /_bare. 200 pollers (asyncio, keep-alive connections) send the poll with the signed-in office
session and the board's current version, so every answer is the 204 of an unchanged board.
"""
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from bench.report import Result

TITLE = "Board polling: unchanged-board poll vs a bare Flask response (200 concurrent pollers)"
POLLERS = 200
SECONDS_PER_CONTENDER = 10
WARMUP_SECONDS = 2
MAX_REQUESTS = 200_000  # a bound on a run however fast the machine is
JOBS = 200
GUNICORN = os.environ.get("BOARD_BENCH_GUNICORN", "-w 2 --threads 50 --worker-class gthread --keep-alive 30").split()
TARGET_RATIO = 0.7
TARGET_P99_MS = 50
ADMIN_DSN = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"


def serving_app():
    """What gunicorn serves: the portal, with a bare one-route Flask app at /_bare (gunicorn factory)."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from portal import create_app

    bare = Flask("bare")
    bare.add_url_rule("/", "bare", lambda: ("", 204))
    portal = create_app()
    # The same empty answer from inside the portal: its session, login manager and extensions, no database.
    portal.add_url_rule("/_bench/empty", "bench_empty", lambda: ("", 204))
    return DispatcherMiddleware(portal, {"/_bare": bare})


def seed_board(app):
    """~200 jobs spread over the board's groups, and an office user; returns the user's email."""
    from portal.audit.services import Actor
    from portal.auth.services import create_user
    from portal.billing.models import BillingStatus
    from portal.clients.models import Client
    from portal.extensions import db
    from portal.jobs.models import WorkStatus
    from portal.jobs.services import add_line_item, create_job

    states = [(WorkStatus.SCHEDULED, BillingStatus.NOT_BILLED), (WorkStatus.IN_PROGRESS, BillingStatus.NOT_BILLED),
              (WorkStatus.COMPLETED, BillingStatus.PENDING), (WorkStatus.COMPLETED, BillingStatus.DRAFT),
              (WorkStatus.COMPLETED, BillingStatus.SENT), (WorkStatus.COMPLETED, BillingStatus.PROCESSING),
              (WorkStatus.COMPLETED, BillingStatus.PAID), (WorkStatus.COMPLETED, BillingStatus.OVERDUE),
              (WorkStatus.COMPLETED, BillingStatus.PAYMENT_FAILED)]
    system = Actor.system("bench")
    with app.app_context():
        office = create_user(email="office@bench.example.com", name="Bench Office", role="office", password=PASSWORD)
        crew = [create_user(email=f"crew{n}@bench.example.com", name=f"Crew {n}", role="crew", password=PASSWORD)
                for n in range(5)]
        clients = [Client(name=f"Bench client {n}", billing_emails=[f"ap{n}@bench.example.com"]) for n in range(20)]
        db.session.add_all(clients)
        for n in range(JOBS):
            job = create_job(clients[n % len(clients)], by=system, crew=[crew[n % len(crew)]], scope="Service visit")
            add_line_item(job, by=system, start_work=False, description="Labor", quantity="2", unit_amount=9500)
            job.work_status, job.billing_status = states[n % len(states)]
        db.session.commit()
        email = office.email
        db.session.remove()
    return email


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not start listening")


def sign_in(base, email):
    """The office session cookie and the board's current version, as a browser would have them."""
    import requests

    session = requests.Session()
    page = session.get(f"{base}/login").text
    token = page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
    answer = session.post(f"{base}/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                          allow_redirects=False)
    assert answer.status_code == 302, answer.status_code
    board = session.get(f"{base}/office/board")
    assert board.status_code == 200, board.status_code
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    poll = session.get(f"{base}/office/board/poll", headers={"HX-Request": "true", "If-None-Match": board.headers["ETag"]})
    assert poll.status_code == 204 and poll.content == b"", (poll.status_code, poll.content[:80])
    return cookie, board.headers["ETag"]


async def read_response(reader):
    """Status code of one HTTP/1.1 response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def poller(port, request, stop_at, latencies, budget, expected):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            if status != expected:
                raise RuntimeError(f"unexpected status {status}")
    finally:
        writer.close()


async def hammer(port, request, seconds, expected):
    latencies, budget = [], [MAX_REQUESTS]
    started = time.perf_counter()
    await asyncio.gather(*(poller(port, request, started + seconds, latencies, budget, expected)
                           for _ in range(POLLERS)))
    return latencies, time.perf_counter() - started


def measure(port, request, expected):
    asyncio.run(hammer(port, request, WARMUP_SECONDS, expected))
    latencies, elapsed = asyncio.run(hammer(port, request, SECONDS_PER_CONTENDER, expected))
    ordered = sorted(latencies)

    def percentile(p):
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {"requests": len(ordered), "rps": len(ordered) / elapsed, "p50": percentile(0.50),
            "p95": percentile(0.95), "p99": percentile(0.99), "mean": statistics.fmean(ordered) * 1000}


def run():
    """Seed a board, start gunicorn, then time the bare response and the unchanged poll."""
    name = f"closeout_bench_board_{os.getpid()}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {"CLOSEOUT_ENV": "test", "SECRET_KEY": "bench", "DATABASE_URL": ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}",
           "REDIS_URL": REDIS_URL, "RQ_QUEUE_PREFIX": f"closeout-bench-{uuid.uuid4().hex[:6]}"}
    os.environ.update(env)
    server = None
    app = None
    try:
        from flask_migrate import upgrade

        from portal import create_app
        from portal.config import load_config

        app = create_app(load_config("test"))
        with app.app_context():
            upgrade()
        email = seed_board(app)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *GUNICORN, "-b", f"127.0.0.1:{port}",
             "bench.board_polling:serving_app()"],
            cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, server)
        cookie, version = sign_in(f"http://127.0.0.1:{port}", email)
        bare_request = b"GET /_bare/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        poll_request = (f"GET /office/board/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nHX-Request: true\r\n"
                        f"If-None-Match: {version}\r\nCookie: {cookie}\r\n\r\n").encode()
        portal_request = (f"GET /_bench/empty HTTP/1.1\r\nHost: 127.0.0.1\r\nHX-Request: true\r\n"
                          f"Cookie: {cookie}\r\n\r\n").encode()
        bare = measure(port, bare_request, 204)
        portal_empty = measure(port, portal_request, 204)
        poll = measure(port, poll_request, 204)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        if app is not None:
            from portal.extensions import db

            with app.app_context():
                db.engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ratio = poll["rps"] / bare["rps"]
    meets = ratio >= TARGET_RATIO and poll["p99"] < TARGET_P99_MS
    figures = {
        "bare req/s": round(bare["rps"]), "bare p50/p95/p99 ms": f"{bare['p50']:.1f}/{bare['p95']:.1f}/{bare['p99']:.1f}",
        "poll req/s": round(poll["rps"]), "poll p50/p95/p99 ms": f"{poll['p50']:.1f}/{poll['p95']:.1f}/{poll['p99']:.1f}",
        "portal empty req/s": round(portal_empty["rps"]),
        "portal empty p50/p95/p99 ms": f"{portal_empty['p50']:.1f}/{portal_empty['p95']:.1f}/{portal_empty['p99']:.1f}",
        "poll / bare": round(ratio, 2),
        "poll / portal empty": round(poll["rps"] / portal_empty["rps"], 2),
        f"meets target (≥ {TARGET_RATIO} of bare, p99 < {TARGET_P99_MS} ms)": meets,
    }
    rows = [f"| {label} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} |"
            for label, r in (("Bare Flask (204, no session, no database)", bare),
                             ("Portal, empty route (204: session cookie decoded, no user load, no database)", portal_empty),
                             ("Unchanged board poll (session, user load, version query → 204)", poll))]
    markdown = "\n".join([
        f"{POLLERS} concurrent pollers (asyncio, keep-alive, loopback) for {SECONDS_PER_CONTENDER} s each after "
        f"{WARMUP_SECONDS} s of warm-up, against one gunicorn (`{' '.join(GUNICORN)}`) serving the portal and a "
        f"one-route Flask app beside it. The board holds {JOBS} jobs; every poll carries the office session and "
        "the current version, so each is answered 204 from the version check. The load generator shares the machine.",
        "",
        "| | requests | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Poll / bare: **{ratio:.2f}**; poll / portal empty route: {poll['rps'] / portal_empty['rps']:.2f}. Target ≥ {TARGET_RATIO} of bare and p99 < {TARGET_P99_MS} ms: "
        f"**{'met' if meets else 'NOT met'}**.",
    ])
    return Result(TITLE, figures, markdown)
