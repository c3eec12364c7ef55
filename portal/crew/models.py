"""What a crew phone sent with its own change id, so that a replay gets the original answer (issue 9)."""
import enum

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


class ChangeKind(str, enum.Enum):
    PHOTO = "photo"
    NOTE = "note"
    ITEM = "item"
    COMPLETE = "complete"


class CrewChange(db.Model):
    """One applied change from a phone's offline queue; the unique client id makes a replay a lookup."""

    __tablename__ = "crew_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(36), unique=True)  # a UUID made on the phone
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[ChangeKind] = mapped_column(
        Enum(ChangeKind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]))
    # The photo, note or line item it made (none for a completion); it may be removed later, so no foreign key.
    result_id: Mapped[int | None]
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    job = relationship("Job")
