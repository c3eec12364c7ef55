"""What runs on a clock, for `python worker.py --cron` (run exactly one such process).

Each entry is idempotent, so a missed or doubled run does no harm: the sweeper only
re-enqueues what is still pending, and a batch run only bills jobs still ready to bill.
"""
from rq.cron import CronScheduler

from portal.billing import tasks as billing_tasks
from portal.payments import tasks as payments_tasks
from portal.referrals import tasks as referrals_tasks
from portal.reminders import tasks as reminders_tasks

EVERY_FIVE_MINUTES = 300


def build_cron(connection, queue_name):
    """A CronScheduler with Closeout's periodic tasks."""
    cron = CronScheduler(connection=connection, name="closeout-cron")
    cron.register(billing_tasks.sweep_triggers, queue_name, interval=EVERY_FIVE_MINUTES)
    cron.register(billing_tasks.run_due_batches, queue_name, cron="15 6 * * *")  # daily, 06:15 UTC
    cron.register(payments_tasks.sweep_received_events, queue_name, interval=EVERY_FIVE_MINUTES)
    cron.register(payments_tasks.reconcile_with_stripe, queue_name, cron="7 * * * *")  # hourly
    cron.register(payments_tasks.sweep_overdue, queue_name, cron="30 * * * *")  # hourly: due dates pass all day
    # Hourly: reminders are due by the business's calendar day, and wait for its business hours.
    cron.register(reminders_tasks.send_due_reminders, queue_name, cron="35 * * * *")
    cron.register(referrals_tasks.release_due_payouts, queue_name, cron="45 * * * *")  # hourly: holds end all day
    return cron
