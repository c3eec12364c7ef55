"""`python -m stripe_sandbox --port 12111`: run the Stripe stand-in on loopback until SIGTERM or Ctrl-C."""

import argparse
import ipaddress
import signal
import sys

from stripe_sandbox.sandbox import DEFAULT_RETRY_DELAYS, Sandbox, StartupEndpoint, new_webhook_secret
from stripe_sandbox.server import build_server


def retry_delays(text):
    """`1,2,4,8` → seconds to wait before each retry of a failed delivery."""
    try:
        delays = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if any(delay < 0 for delay in delays):
        raise argparse.ArgumentTypeError("retry delays cannot be negative")
    return delays


def webhook_secret(text):
    if not text.startswith("whsec_"):
        raise argparse.ArgumentTypeError("a webhook signing secret starts with whsec_")
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m stripe_sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=12111, help="port to bind; 0 picks a free one (default: 12111)")
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="deliver every event to this URL; repeat for more endpoints")
    parser.add_argument("--webhook-secret", type=webhook_secret, metavar="whsec_…",
                        help="signing secret for the --webhook endpoints (default: generated and printed)")
    parser.add_argument("--public-url", metavar="URL",
                        help="base of hosted invoice, PDF and payment link URLs (default: http://HOST:PORT)")
    parser.add_argument("--retry-delays", type=retry_delays, default=list(DEFAULT_RETRY_DELAYS), metavar="S,S,…",
                        help="seconds before each retry of a failed delivery (default: 1,2,4,8,16)")
    args = parser.parse_args(argv)
    if args.webhook_secret and not args.webhook:
        parser.error("--webhook-secret needs at least one --webhook")
    return args


def _display_host(host):
    # A wildcard bind is reachable on loopback, and loopback is what a browser on this machine can open.
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def main(argv=None):
    args = parse_args(argv)
    secret = args.webhook_secret or new_webhook_secret()
    startup = [StartupEndpoint(url=url, secret=secret) for url in args.webhook]
    sandbox = Sandbox(public_url=args.public_url or "http://127.0.0.1", retry_delays=args.retry_delays,
                      startup_endpoints=startup)
    server = build_server(sandbox, args.host, args.port)
    base_url = f"http://{_display_host(args.host)}:{server.server_port}"
    if not args.public_url:
        sandbox.public_url = base_url
    for endpoint in startup:
        print(f"webhook endpoint {endpoint.id} -> {endpoint.url} (signing secret {endpoint.secret})")
    print(f"stripe-sandbox listening on {base_url}", flush=True)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a person stops it; exit as cleanly as on SIGTERM
    finally:
        server.server_close()
        sandbox.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
