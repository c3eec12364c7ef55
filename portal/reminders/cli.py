"""`flask reminders run [--dry-run]`: send the reminders due now, as the hourly cron does."""
import click
from flask.cli import AppGroup

reminders_cli = AppGroup("reminders", help="Payment reminders (dunning).")


@reminders_cli.command("run")
@click.option("--dry-run", is_flag=True, help="List the reminders due now without sending any.")
def run_command(dry_run):
    """Send each unpaid bill the reminder step due today (business time zone), once."""
    from portal.reminders.services import run_reminders, step_label

    summary = run_reminders(dry_run=dry_run)
    verb = "Would send" if dry_run else "Sent"
    for record_id, numbers, step in summary.sent:
        click.echo(f"{verb} reminder {step_label(step)} for {', '.join(numbers)} (billing record {record_id}).")
    for record_id, reason in summary.skipped:
        click.echo(f"Skipped billing record {record_id}: {reason}")
    for record_id, error in summary.failed:
        click.echo(f"Failed for billing record {record_id}: {error}", err=True)
    click.echo(f"{len(summary.sent)} reminder(s) {'due' if dry_run else 'sent'}, {len(summary.skipped)} skipped, "
               f"{len(summary.failed)} failed.")
    if summary.failed:
        raise SystemExit(1)
