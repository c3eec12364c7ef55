"""`flask --app portal billing …`: the scheduled runs of closeout to cash."""
import click
from flask.cli import AppGroup

from portal.audit.services import Actor

billing_cli = AppGroup("billing", help="Billing runs: batches, the outbox sweeper, needs attention.")


@billing_cli.command("run-batches")
def run_batches_command():
    """Bill weekly and monthly clients' ready jobs from ended periods (schedule daily)."""
    from portal.billing.services import run_batches

    batches = run_batches(by=Actor.system("billing run-batches"))
    for batch in batches:
        click.echo(f"batch {batch.id}: {batch.client.name} {batch.period_key}, {len(batch.records)} jobs")
    click.echo(f"{len(batches)} batch(es) opened.")


@billing_cli.command("sweep")
def sweep_command():
    """Re-enqueue billing triggers that Redis lost or that got stuck (schedule every few minutes)."""
    from portal.billing.services import sweep

    triggers = sweep()
    for trigger in triggers:
        click.echo(f"re-enqueued trigger {trigger.id} for job {trigger.job.number}")
    click.echo(f"{len(triggers)} trigger(s) re-enqueued.")


@billing_cli.command("needs-attention")
def needs_attention_command():
    """List billing attempts that need a person."""
    from portal.billing.services import needs_attention

    for trigger in needs_attention():
        click.echo(f"trigger {trigger.id} job {trigger.job.number}: {trigger.last_error}")
