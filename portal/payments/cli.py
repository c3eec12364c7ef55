"""`flask --app portal stripe setup|replay|reconcile`: the payment sync from the shell."""
import click
from flask.cli import AppGroup

from portal.audit.services import Actor

stripe_cli = AppGroup("stripe", help="Stripe payment sync: the webhook endpoint, failed events, reconciliation.")


@stripe_cli.command("setup")
@click.option("--url", required=True, help="The public URL of /webhooks/stripe, e.g. https://…/webhooks/stripe")
def setup_command(url):
    """Register the webhook endpoint with exactly the events Closeout handles; running it again changes nothing."""
    from portal.billing import stripe_gateway as gateway
    from portal.payments.handlers import HANDLED_EVENTS

    wanted = sorted(HANDLED_EVENTS)
    for endpoint in gateway.list_webhook_endpoints():
        if endpoint.url != url:
            continue
        if sorted(endpoint.enabled_events) == wanted:
            click.echo(f"Already registered: {endpoint.id} for {url} with {len(wanted)} events.")
        else:
            gateway.update_webhook_endpoint(endpoint.id, enabled_events=wanted,
                                            key=f"webhook-endpoint-{endpoint.id}-events-{len(wanted)}")
            click.echo(f"Updated {endpoint.id}: now exactly the {len(wanted)} events Closeout handles.")
        click.echo("Stripe shows a signing secret only when an endpoint is created; keep the one you stored.")
        return
    endpoint = gateway.create_webhook_endpoint(url=url, enabled_events=wanted, key=f"webhook-endpoint-{url}")
    click.echo(f"Registered {endpoint.id} for {url} with {len(wanted)} events.")
    click.echo("Store this secret now; Stripe will not show it again:")
    click.echo(f"STRIPE_WEBHOOK_SECRET={endpoint.secret}")


@stripe_cli.command("replay")
@click.option("--failed", "failed_only", is_flag=True, required=True, help="Retry every failed event.")
def replay_command(failed_only):
    """Send every failed Stripe event back to the worker (the Webhook issues page's Retry, for all)."""
    from portal.extensions import db
    from portal.payments.services import replay_failed

    events = replay_failed(by=Actor.system("stripe replay --failed"))
    db.session.commit()
    for event_row in events:
        click.echo(f"retrying {event_row.stripe_event_id} ({event_row.type})")
    click.echo(f"{len(events)} failed event(s) sent back to the worker.")


@stripe_cli.command("reconcile")
def reconcile_command():
    """Process events Stripe could not deliver and repair open bills that drifted; prints what it fixed."""
    from portal.payments.reconcile import reconcile

    for line in reconcile().lines():
        click.echo(line)
