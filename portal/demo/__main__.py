"""`make demo`: the whole loop on the embedded default (SQLite, in-process tasks, the Stripe sandbox).

Migrates, seeds, starts the Stripe sandbox beside the portal, serves the portal and
prints where to click and who to sign in as.
"""
import argparse
import atexit
import os
import signal
import subprocess
import sys
from pathlib import Path

from portal.config import INSTANCE_DIR

SANDBOX_KEY = "sk_test_closeout_demo"
# The demo's own webhook signing secret, shared by the sandbox and the portal; demo only, never a real one.
DEMO_WEBHOOK_SECRET = "whsec_closeout_demo_only"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--sandbox-port", type=int, default=12111)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args()


def start_stripe_sandbox(port, portal_url):
    """The local Stripe stand-in, as its own process; None if this checkout has no sandbox."""
    if not (Path(__file__).resolve().parents[2] / "stripe_sandbox").is_dir():
        return None
    command = [sys.executable, "-m", "stripe_sandbox", "--port", str(port),
               "--webhook", f"{portal_url}/webhooks/stripe", "--webhook-secret", DEMO_WEBHOOK_SECRET]
    log = open(INSTANCE_DIR / "stripe-sandbox.log", "ab")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    atexit.register(process.terminate)
    ready = process.stdout.readline().strip()
    while ready and "listening on" not in ready:
        ready = process.stdout.readline().strip()
    if "listening on" not in ready:
        raise SystemExit("the Stripe sandbox did not start; see instance/stripe-sandbox.log")
    return ready.rsplit(" ", 1)[-1]


def main():
    args = parse_args()
    # Stop the sandbox and the mail catcher with us, on Ctrl-C and on kill alike.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    INSTANCE_DIR.mkdir(exist_ok=True)
    os.environ["CLOSEOUT_ENV"] = "development"
    os.environ.pop("REDIS_URL", None)  # the embedded default: tasks run in-process
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'closeout.db'}")
    portal_url = f"http://{args.host}:{args.port}"
    sandbox_url = start_stripe_sandbox(args.sandbox_port, portal_url)
    if sandbox_url:
        os.environ["STRIPE_API_BASE"] = sandbox_url
        os.environ["STRIPE_SECRET_KEY"] = SANDBOX_KEY
        os.environ["STRIPE_WEBHOOK_SECRET"] = DEMO_WEBHOOK_SECRET

    from portal.demo.mailcatcher import start_mailcatcher

    catcher, smtp_port = start_mailcatcher(INSTANCE_DIR / "outbox")
    atexit.register(catcher.stop)
    os.environ["SMTP_HOST"], os.environ["SMTP_PORT"] = "127.0.0.1", str(smtp_port)
    os.environ.setdefault("PUBLIC_URL", portal_url)

    from flask_migrate import upgrade

    from portal import create_app
    from portal.demo.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        summary = seed_demo()
        if sandbox_url:
            from portal.demo.seed import connect_demo_partner

            connect_demo_partner(sandbox_url)  # paying the referred client's bill then makes a transfer

    print()
    print(f"  Closeout is running: {portal_url}/")
    if sandbox_url:
        print(f"  Stripe sandbox:      {sandbox_url}/_sandbox/health")
    print(f"  Customer emails:     {portal_url}/_demo/outbox  (caught locally; nothing leaves this machine)")
    print()
    print("  Sign in as (password for all: closeout-demo):")
    for role, email in summary["logins"]:
        print(f"    {role:<8} {email}")
    print()
    print("  The loop: a crew member completes a job on a phone (375 px) → the invoice or payment link is")
    print("  created in the sandbox and emailed (see the outbox) → open the email's Pay button and pay →")
    print("  the office board shows the job paid within seconds. Gloria Ramirez was referred by Bayport Realty")
    print("  (partner@…): paying her link sends the partner's 10 % fee as a sandbox transfer. Ctrl-C stops everything.")
    print()
    sys.stdout.flush()

    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
