"""Every model, imported once so that mappers and Alembic see the whole schema."""
from portal.audit.models import AuditEntry, Source  # noqa: F401
from portal.auth.models import ApiToken, Role, User, UserSession  # noqa: F401
from portal.billing.models import (  # noqa: F401
    BillingBatch,
    BillingRecord,
    BillingStatus,
    BillingTrigger,
    CustomerEmail,
    DocumentLink,
    EmailKind,
    StripeTaxRate,
    RecordKind,
    TriggerStatus,
)
from portal.clients.models import Batching, BillingMode, Client, SendMode, Site  # noqa: F401
from portal.crew.models import ChangeKind, CrewChange  # noqa: F401
from portal.jobs.models import Job, JobLineItem, LineItemTemplate, Note, Photo, WorkStatus, job_assignments  # noqa: F401
from portal.payments.models import EventStatus, StripeSyncState, WebhookEvent  # noqa: F401
from portal.referrals.models import (  # noqa: F401
    AccountStatus,
    DisputePolicy,
    EntryKind,
    FeeBase,
    FeeKind,
    Partner,
    Payout,
    PayoutEntry,
    PayoutStatus,
    Referral,
)
