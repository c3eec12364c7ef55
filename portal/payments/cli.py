"""`flask --app portal stripe setup|replay|reconcile`: the payment sync from the shell."""
import click
from flask.cli import AppGroup

from portal.audit.services import Actor

stripe_cli = AppGroup("stripe", help="Stripe payment sync: the webhook endpoint, failed events, reconciliation.")


@stripe_cli.command("setup")
@click.option("--url", required=True, help="The public URL of /webhooks/stripe, e.g. https://…/webhooks/stripe")
def setup_command(url):
    """Register the webhook endpoints with exactly the events Closeout handles; running it again changes nothing.

    Two endpoints at the one URL: an account endpoint for billing and payment events, and a Connect endpoint
    for `account.updated` of the partners' connected accounts, which Stripe sends to Connect endpoints only.
    """
    from portal.billing import stripe_gateway as gateway
    from portal.payments.handlers import ACCOUNT_EVENTS, CONNECT_EVENTS

    registered = gateway.list_webhook_endpoints()
    new_secrets = []
    for kind, events in (("account", ACCOUNT_EVENTS), ("connect", CONNECT_EVENTS)):
        wanted, metadata = sorted(events), {"closeout_endpoint": kind}
        # An endpoint from before there were two has no mark: it is the account endpoint.
        found = [e for e in registered if e.url == url and (endpoint_mark(e) or "account") == kind]
        if not found:
            endpoint = gateway.create_webhook_endpoint(url=url, enabled_events=wanted, connect=kind == "connect",
                                                       metadata=metadata, key=f"webhook-endpoint-{kind}-{url}")
            click.echo(f"Registered the {kind} endpoint {endpoint.id} for {url} with {len(wanted)} events.")
            new_secrets.append(endpoint.secret)
        elif sorted(found[0].enabled_events) == wanted and endpoint_mark(found[0]):
            click.echo(f"Already registered: the {kind} endpoint {found[0].id} with {len(wanted)} events.")
        else:
            gateway.update_webhook_endpoint(found[0].id, enabled_events=wanted, metadata=metadata,
                                            key=f"webhook-endpoint-{found[0].id}-{kind}-{len(wanted)}")
            click.echo(f"Updated the {kind} endpoint {found[0].id}: now exactly its {len(wanted)} events.")
    if not new_secrets:
        click.echo("Stripe shows a signing secret only when an endpoint is created; keep the ones you stored.")
    elif len(new_secrets) == 2:
        click.echo("Store these secrets now; Stripe will not show them again:")
        click.echo(f"STRIPE_WEBHOOK_SECRET={','.join(new_secrets)}")
    else:
        click.echo("Add this secret to STRIPE_WEBHOOK_SECRET, after a comma, now; Stripe will not show it again:")
        click.echo(new_secrets[0])


def endpoint_mark(endpoint):
    """Which of Closeout's endpoints this is ("account" or "connect"), from the metadata setup gave it."""
    return (endpoint.metadata.to_dict() if endpoint.metadata else {}).get("closeout_endpoint")


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
