"""Demo data: a small trades business on an ordinary day, built through the real services.

Everything goes through the same services as the app (accounts, clients, the price list,
jobs, notes, line items, completion), so audit trails and billing triggers exist exactly
as if people had done the work. Seeding twice changes nothing: the owner account marks it.
"""
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import func, select

from portal.audit.services import Actor
from portal.auth.models import Role
from portal.auth.services import create_user, find_user_by_email
from portal.clients.models import Client
from portal.clients.services import create_client, create_site
from portal.extensions import db
from portal.jobs.catalog import create_template
from portal.jobs.models import Job, LineItemTemplate, WorkStatus
from portal.jobs.services import add_line_item, add_note, complete_job, create_job
from portal.timeutil import business_zone, utcnow

DEMO_PASSWORD = "closeout-demo"  # demo only, printed on purpose
DEMO_DOMAIN = "demo.closeout.test"

PEOPLE = {  # key: (role, email, name)
    "owner": (Role.OWNER, f"owner@{DEMO_DOMAIN}", "Sam Okafor"),
    "office": (Role.OFFICE, f"office@{DEMO_DOMAIN}", "Renee Walsh"),
    "crew1": (Role.CREW, f"crew1@{DEMO_DOMAIN}", "Marco Alvarez"),
    "crew2": (Role.CREW, f"crew2@{DEMO_DOMAIN}", "Priya Natarajan"),
    "partner": (Role.PARTNER, f"partner@{DEMO_DOMAIN}", "Lee Chen"),
}
OWNER_EMAIL = PEOPLE["owner"][1]

# One client per billing policy the worker must handle; addresses and phones are fictional (555-01xx).
CLIENTS = {
    "harbor": dict(
        name="Harbor View Property Management", billing_emails=["ap@harborview.example.com"],
        phone="555-0142", address="400 Pier Road, Suite 2, Bayport",
        billing_mode="invoice", send_mode="auto", batching="per_job", days_until_due=30,
        sites=[("Harbor View Building A", "410 Pier Road, Bayport", "Rooftop access via stair C; code 4412"),
               ("Harbor View Building B", "420 Pier Road, Bayport", "Check in with the front desk"),
               ("Harbor View Marina Office", "2 Dock Street, Bayport", "")]),
    "dental": dict(
        name="Maple Street Dental", billing_emails=["office@maplestreetdental.example.com"],
        phone="555-0117", address="88 Maple Street, Bayport",
        billing_mode="invoice", send_mode="draft", batching="per_job", days_until_due=15,
        sites=[("Maple Street Dental", "88 Maple Street, Bayport", "Work between patients; ask for Tanya")]),
    "homeowner": dict(
        name="Gloria Ramirez", billing_emails=["gloria.ramirez@example.net"],
        phone="555-0163", address="17 Linden Court, Bayport",
        billing_mode="payment_link", send_mode="auto", batching="per_job", days_until_due=7,
        sites=[("Ramirez home", "17 Linden Court, Bayport", "Dog in the yard; use the side gate")]),
    "northgate": dict(
        name="Northgate Retail Group", billing_emails=["payables@northgate.example.com", "facilities@northgate.example.com"],
        phone="555-0188", address="1200 Commerce Way, Fairview",
        billing_mode="invoice", send_mode="auto", batching="weekly", days_until_due=45,
        sites=[("Northgate Store 112", "55 Market Street, Bayport", "Receiving door at the back"),
               ("Northgate Store 140", "900 Route 9, Fairview", "")]),
    "cedar": dict(
        name="Cedar Ridge Apartments", billing_emails=["manager@cedarridge.example.org"],
        phone="555-0129", address="300 Cedar Ridge Drive, Bayport",
        billing_mode="invoice", send_mode="draft", batching="monthly", days_until_due=30,
        sites=[("Cedar Ridge Building C", "300 Cedar Ridge Drive, Bldg C, Bayport", "Keys at the leasing office"),
               ("Cedar Ridge Clubhouse", "300 Cedar Ridge Drive, Bayport", "")]),
    "schools": dict(
        name="Lakeside Unified School District", billing_emails=["accountspayable@lakeside-usd.example.org"],
        phone="555-0101", address="1 Education Plaza, Lakeside",
        billing_mode="invoice", send_mode="draft", batching="manual", days_until_due=60,
        sites=[("Lakeside Elementary", "45 School Lane, Lakeside", "Sign in at the office; badge required"),
               ("Lakeside Middle School", "60 School Lane, Lakeside", "Boiler room key with the custodian")]),
    "church": dict(
        name="Riverside Community Church", billing_emails=["treasurer@riversidechurch.example.org"],
        phone="555-0150", address="12 River Street, Bayport",
        billing_mode="invoice", send_mode="draft", batching="per_job", days_until_due=30, allow_no_charge=True,
        sites=[("Riverside Community Church", "12 River Street, Bayport", "Side door; the sexton lets you in")]),
    "pantry": dict(
        name="St. Brigid's Food Pantry", billing_emails=["director@stbrigidspantry.example.org"],
        phone="555-0176", address="230 Hope Street, Bayport",
        billing_mode="invoice", send_mode="auto", batching="per_job", days_until_due=30, tax_exempt=True,
        sites=[("St. Brigid's Food Pantry", "230 Hope Street, Bayport", "Walk-in cooler is in the back room")]),
}

# The price list: (name, unit, unit amount in cents, taxable, description). Parts are taxable, labor is not.
TEMPLATES = [
    ("Service call", "each", 8900, False, "Trip charge: travel and the first 15 minutes on site"),
    ("Labor, technician", "hour", 9500, False, "Licensed technician, per hour"),
    ("Labor, helper", "hour", 6000, False, "Apprentice or helper, per hour"),
    ("After-hours surcharge", "each", 7500, False, "Evenings, weekends and holidays"),
    ("Air filter 16x25x1 MERV 11", "each", 2450, True, ""),
    ("Run capacitor 45/5 µF", "each", 6800, True, ""),
    ("Refrigerant R-410A", "lb", 8500, True, ""),
    ("Faucet cartridge", "each", 3850, True, ""),
    ("Toilet fill valve", "each", 2900, True, ""),
    ("Disposal fee", "each", 3500, False, "Haul-away and disposal of old equipment"),
    ("Drain cleaning, main line", "each", 24500, False, "Cable the main line up to 100 ft"),
]


@dataclass(frozen=True)
class DemoJob:
    """One job of the demo day and how far the crew has got with it."""

    crew: str | None
    client: str
    site: int
    scope: str
    hours_from_now: float | None = None  # today's jobs, relative to the time of seeding
    tomorrow_at: time | None = None
    state: WorkStatus = WorkStatus.SCHEDULED
    notes: tuple = ()
    items: tuple = ()  # (template name, quantity)
    no_charge_reason: str | None = None
    external_ref: str | None = None
    customer_notes: str = ""


DAY = [
    # Marco: two jobs closed out this morning, one on the go, one later, one tomorrow.
    DemoJob("crew1", "harbor", 0, "Rooftop unit RTU-2 not cooling; replace failed capacitor", hours_from_now=-6,
            state=WorkStatus.COMPLETED, external_ref="HV-TKT-4821",
            notes=("Capacitor bulged. Replaced and tested: 18 °F split across the coil.",),
            items=(("Service call", "1"), ("Labor, technician", "1.5"), ("Run capacitor 45/5 µF", "1"))),
    DemoJob("crew1", "northgate", 0, "Quarterly filter change, six rooftop units", hours_from_now=-4,
            state=WorkStatus.COMPLETED, external_ref="NG-PM-2291",
            items=(("Air filter 16x25x1 MERV 11", "6"), ("Labor, technician", "1"))),
    DemoJob("crew1", "dental", 0, "Leaking faucet in operatory 3", hours_from_now=-1, state=WorkStatus.IN_PROGRESS,
            notes=("Cartridge worn; replacing it. Water to op 3 is off for 30 minutes.",),
            items=(("Labor, technician", "1"), ("Faucet cartridge", "1"))),
    DemoJob("crew1", "cedar", 0, "Unit C-12: garbage disposal jammed and humming", hours_from_now=2,
            customer_notes="Tenant works from home; call 10 minutes ahead."),
    DemoJob("crew1", "schools", 0, "Pre-season boiler inspection", tomorrow_at=time(8, 0),
            external_ref="LUSD-WO-7716"),
    # Priya: a payment-link job done, a warranty callback at no charge, a cooler in progress, more later.
    DemoJob("crew2", "homeowner", 0, "Water heater flush and anode rod check", hours_from_now=-5,
            state=WorkStatus.COMPLETED, notes=("Heavy sediment flushed; anode at about half, fine for now.",),
            items=(("Service call", "1"), ("Labor, technician", "1"))),
    DemoJob("crew2", "church", 0, "Warranty callback: thermostat in the fellowship hall drops out", hours_from_now=-3,
            state=WorkStatus.COMPLETED, notes=("Loose common wire from last week's install; re-terminated.",),
            no_charge_reason="Warranty callback on our own install"),
    DemoJob("crew2", "pantry", 0, "Walk-in cooler not holding 38 °F", hours_from_now=-0.5, state=WorkStatus.IN_PROGRESS,
            notes=("Low on charge; leak-checking the evaporator before recharging.",),
            items=(("Labor, technician", "2"), ("Refrigerant R-410A", "2.5"))),
    DemoJob("crew2", "harbor", 1, "Unit 3B: toilet runs constantly", hours_from_now=3, external_ref="HV-TKT-4830"),
    DemoJob("crew2", "dental", 0, "Annual backflow preventer test", tomorrow_at=time(10, 30)),
    # Booked, not yet given to a crew: something for the office to assign.
    DemoJob(None, "northgate", 1, "Store 140: main line backing up in the restrooms", tomorrow_at=time(13, 0),
            external_ref="NG-SR-3310"),
]
VISIT_LENGTH = timedelta(hours=1, minutes=30)


def seed_demo():
    """Create the demo business once and commit it; returns summarize()'s dict, which says if it already was."""
    already_seeded = find_user_by_email(OWNER_EMAIL) is not None
    if not already_seeded:
        seeder = Actor.system("demo seed")
        people = create_people()
        clients = create_clients(seeder)
        templates = {template.name: template for template in create_price_list(seeder)}
        create_partner(people, clients)  # before the day's work, so the referred job is billed with its partner
        work_the_day(people, clients, templates, seeder)
        db.session.commit()
    return summarize(already_seeded)


def create_people():
    """The owner, the office, two crew members and a referral partner, all with the demo password."""
    return {key: create_user(email=email, name=name, role=role.value, password=DEMO_PASSWORD)
            for key, (role, email, name) in PEOPLE.items()}


def create_clients(seeder):
    """One client per billing policy, each with its sites (index order as listed)."""
    clients = {}
    for key, spec in CLIENTS.items():
        spec = dict(spec)
        sites = spec.pop("sites")
        client = create_client(by=seeder, **spec)
        clients[key] = (client, [create_site(client, by=seeder, name=name, address=address, access_notes=notes)
                                 for name, address, notes in sites])
    return clients


# The referral partner (issue 6): a realtor who sent Gloria Ramirez, earning 10 % of the pre-tax subtotal.
PARTNER = dict(name="Bayport Realty", contact_name="Lee Chen", email="fees@bayportrealty.example.com",
               phone="555-0135", fee_basis_points=1000)
PARTNER_REFERS = "homeowner"


def create_partner(people, clients):
    """The partner login's partner, with a referral on one client from a month ago."""
    from portal.referrals.attribution import business_date
    from portal.referrals.models import FeeBase, FeeKind, Partner, Referral

    partner = Partner(user=people["partner"], fee_kind=FeeKind.PERCENT, fee_base=FeeBase.SUBTOTAL, **PARTNER)
    db.session.add(partner)
    db.session.add(Referral(partner=partner, client=clients[PARTNER_REFERS][0],
                            starts_on=business_date() - timedelta(days=30)))
    db.session.flush()
    return partner


def connect_demo_partner(sandbox_url):
    """Give the demo partner a ready connected account in this run's sandbox (it forgets accounts on restart)."""
    import json
    import urllib.request

    from portal.billing import stripe_gateway as gateway
    from portal.referrals.models import AccountStatus, Partner
    from portal.referrals.settlement import refresh_account, start_onboarding

    seeder = Actor.system("demo seed")
    partner = db.session.scalar(select(Partner).where(Partner.name == PARTNER["name"]))
    if partner is None:
        return None
    if partner.stripe_account_id:
        try:
            gateway.retrieve_account(partner.stripe_account_id)
        except gateway.StripeRefused:  # a previous run's sandbox account: start over in this one
            partner.stripe_account_id, partner.account_status = None, AccountStatus.NONE
            db.session.commit()
    start_onboarding(partner, by=seeder)
    # The sandbox's "Complete onboarding" button, pressed for the partner (a control of the sandbox, demo only).
    request = urllib.request.Request(f"{sandbox_url}/_sandbox/accounts/{partner.stripe_account_id}/onboard",
                                     data=b"", method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        json.load(response)
    refresh_account(partner, by=seeder)
    db.session.commit()
    return partner


def create_price_list(seeder):
    """Line-item templates at plausible trades prices."""
    return [create_template(by=seeder, name=name, unit=unit, unit_amount=cents, taxable=taxable, description=text)
            for name, unit, cents, taxable, text in TEMPLATES]


def visit_start(spec, now, zone):
    """When the visit starts: relative to now for today's jobs, at a set time for tomorrow's."""
    local_now = now.astimezone(zone)
    if spec.tomorrow_at is not None:
        return datetime.combine(local_now.date() + timedelta(days=1), spec.tomorrow_at, tzinfo=zone)
    start = local_now + timedelta(hours=spec.hours_from_now)
    if spec.hours_from_now > 0:
        # "Later today" even when seeding in the evening, as long as the day has room left.
        last_start = datetime.combine(local_now.date(), time(23, 0), tzinfo=zone)
        start = max(min(start, last_start), local_now + timedelta(minutes=15))
    return start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)


def work_the_day(people, clients, templates, seeder):
    """Book each job, then let its crew do what they have done so far: notes, lines, completion."""
    now, zone = utcnow(), business_zone()
    for spec in DAY:
        client, sites = clients[spec.client]
        crew = [people[spec.crew]] if spec.crew else []
        start = visit_start(spec, now, zone)
        job = create_job(client, by=seeder, site=sites[spec.site], scope=spec.scope, crew=crew,
                         customer_notes=spec.customer_notes, external_ref=spec.external_ref,
                         scheduled_start=start, scheduled_end=start + VISIT_LENGTH)
        if spec.state == WorkStatus.SCHEDULED:
            continue
        worker = Actor.for_user(crew[0])
        for note in spec.notes:
            add_note(job, note, by=worker)
        for name, quantity in spec.items:
            add_line_item(job, by=worker, template=templates[name], quantity=quantity)
        if spec.state == WorkStatus.COMPLETED:
            complete_job(job, by=worker, no_charge_reason=spec.no_charge_reason)


def summarize(already_seeded):
    """What the database holds now, and who to sign in as: (role, email) pairs, one password."""
    jobs = dict(db.session.execute(select(Job.work_status, func.count()).group_by(Job.work_status)).all())
    return {
        "already_seeded": already_seeded,
        "password": DEMO_PASSWORD,
        "logins": [(role.value, email) for role, email, _ in PEOPLE.values()],
        "clients": db.session.scalar(select(func.count()).select_from(Client)),
        "templates": db.session.scalar(select(func.count()).select_from(LineItemTemplate)),
        "jobs": {status.value: jobs.get(status, 0) for status in WorkStatus},
    }
