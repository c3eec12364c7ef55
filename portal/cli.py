"""Flask CLI commands: accounts, API tokens and demo data."""
import click
from flask import Flask
from flask.cli import AppGroup

from portal.errors import ServiceError
from portal.extensions import db

users_cli = AppGroup("users", help="Manage accounts.")
tokens_cli = AppGroup("api-tokens", help="Manage JSON API tokens.")


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["crew", "office", "owner", "partner"]))
@click.option("--name", default=None)
@click.password_option()
def create_user_command(email, role, name, password):
    """Create an account."""
    from portal.auth.services import create_user

    try:
        user = create_user(email=email, name=name, role=role, password=password)
    except ServiceError as error:
        raise click.ClickException(error.message) from None
    db.session.commit()
    click.echo(f"Created {user.role.value} {user.email} (id {user.id}).")


@users_cli.command("deactivate")
@click.argument("email")
def deactivate_user_command(email):
    """Stop an account signing in and end all its sessions now."""
    from portal.audit.services import Actor
    from portal.auth.services import deactivate_user, find_user_by_email

    user = find_user_by_email(email)
    if user is None:
        raise click.ClickException(f"No account for {email}.")
    ended = deactivate_user(user, by=Actor.system("cli"))
    db.session.commit()
    click.echo(f"Deactivated {user.email}; ended {ended} session(s).")


@tokens_cli.command("create")
@click.argument("name")
def create_token_command(name):
    """Create an API token and print it once; only its hash is kept."""
    from portal.auth.models import ApiToken

    token, raw = ApiToken.issue(name)
    db.session.add(token)
    db.session.commit()
    click.echo(f"Token for {name!r} (store it now, it is not shown again):")
    click.echo(raw)


@click.command("seed-demo")
@click.option("--jobs", type=click.IntRange(min=0), default=0,
              help="Also add this many past jobs with their billing, in bulk (the dashboard's large book).")
def seed_demo_command(jobs):
    """Create demo accounts, clients, a price list and a day of jobs; safe to run again."""
    from portal.demo.seed import seed_demo

    summary = seed_demo()
    if jobs:
        from portal.demo.book import seed_book

        records = seed_book(jobs)
        click.echo(f"Added {jobs} past jobs with {records} billing records.")
    if summary["already_seeded"]:
        click.echo("Demo data is already seeded; nothing was added.")
    else:
        jobs = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in summary["jobs"].items())
        click.echo(f"Seeded {summary['clients']} clients, {summary['templates']} price-list items and jobs: {jobs}.")
    click.echo(f"Sign in as (password for all: {summary['password']}; demo data only):")
    for role, email in summary["logins"]:
        click.echo(f"  {role:<8} {email}")


def init_app(app: Flask):
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(seed_demo_command)

    from portal.billing.cli import billing_cli

    app.cli.add_command(billing_cli)

    from portal.payments.cli import stripe_cli

    app.cli.add_command(stripe_cli)

    from portal.reminders.cli import reminders_cli

    app.cli.add_command(reminders_cli)

    from portal.referrals.cli import referrals_cli

    app.cli.add_command(referrals_cli)
