"""`flask --app portal referrals release|retry --failed`: referral payouts from the shell."""
import click
from flask.cli import AppGroup

from portal.audit.services import Actor

referrals_cli = AppGroup("referrals", help="Referral partner payouts: release held ones, retry failed ones.")


@referrals_cli.command("release")
def release_command():
    """Send out held payouts whose hold period has ended (what the hourly run does)."""
    from portal.referrals.settlement import release_due_payouts

    released = release_due_payouts()
    for payout in released:
        click.echo(f"payout {payout.id} (job {payout.job.number}): {payout.status.value}")
    click.echo(f"{len(released)} payout(s) released or queued again.")


@referrals_cli.command("retry")
@click.option("--failed", "failed_only", is_flag=True, required=True, help="Retry every failed payout.")
def retry_command(failed_only):
    """Queue every failed payout's transfer again (the ledger's Retry, for all); never a second transfer."""
    from portal.extensions import db
    from portal.referrals.settlement import retry_failed_payouts

    payouts = retry_failed_payouts(by=Actor.system("referrals retry --failed"))
    db.session.commit()
    for payout in payouts:
        click.echo(f"retrying payout {payout.id} (job {payout.job.number}, {payout.amount - payout.amount_reversed} "
                   f"{payout.currency})")
    click.echo(f"{len(payouts)} failed payout(s) sent back to the worker.")
