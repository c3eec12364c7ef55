"""RQ tasks for reminders: plain functions that take ids and reload rows."""
from portal.audit.services import Actor
from portal.reminders import services
from portal.timeutil import utcnow


def send_due_reminders():
    """Scheduled hourly: every unpaid bill's due reminder step, once.

    A bill whose reminder the mail server did not take is audited and tried again by the next
    run; the run still fails, so RQ's failed registry shows that mail is not going out.
    """
    if not services.within_sending_hours(utcnow()):
        return "before business hours"
    summary = services.run_reminders()
    if summary.failed:
        raise services.ReminderRunIncomplete(
            f"{len(summary.failed)} reminder(s) not sent, {len(summary.sent)} sent: {summary.failed}")
    return summary.as_dict()


def send_manual_reminder(record_id, actor_label):
    """The office's "Send a reminder now"."""
    claim = services.send_manual_reminder(record_id, by=Actor.system(actor_label))
    return None if claim is None else claim.id
