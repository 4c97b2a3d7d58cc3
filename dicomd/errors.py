"""The one error tree. Library code raises these; the three edges translate them:
DIMSE status (scp.py), HTTP status (http/), one-line message (cli/)."""

from __future__ import annotations


class DicomdError(Exception):
    """Base of every error dicomd raises on purpose."""


class ConfigError(DicomdError):
    """The configuration is invalid; the message names the key and the file."""


class InvalidInput(DicomdError):
    """Data that cannot be understood (not DICOM, truncated, missing UIDs). DIMSE 0xC000, HTTP 400."""


class Rejected(InvalidInput):
    """Data refused on purpose (an anonymization script's reject, a policy). Quarantined."""


class HostileArchive(InvalidInput):
    """An archive refused as hostile: paths escaping the target, links, devices, too many members
    or too many uncompressed bytes. HTTP 400."""


class TooLarge(InvalidInput):
    """An instance or upload over the configured size limit. DIMSE 0xA700, HTTP 413."""


class StorageFull(DicomdError):
    """Free space is below the configured floor, or the disk is full. DIMSE 0xA700, HTTP 507."""


class StorageFailure(DicomdError):
    """Disk or catalog failure while storing. DIMSE 0xA700, HTTP 500."""


class ListenFailure(DicomdError):
    """A receiver or the HTTP API cannot listen on its address (port taken, no permission)."""


class NotFound(DicomdError):
    """A session, scan, file or project that does not exist. HTTP 404."""


class Ambiguous(DicomdError):
    """A short name matches several sessions; the message lists them. HTTP 400."""


class Conflict(DicomdError):
    """The operation collides with existing data or another operation. HTTP 409."""


class InvalidState(Conflict):
    """The session is not in a state that allows this operation (e.g. already ARCHIVING)."""


class HeldForReview(Conflict):
    """The session needs a person's look before archiving (burned-in annotation, ...). HTTP 409."""


class Forbidden(DicomdError):
    """The caller may not do this. HTTP 403."""


class RateLimited(DicomdError):
    """Too many failed attempts: refused until ``retry_after`` seconds have passed. HTTP 429."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ScriptError(DicomdError):
    """An anonymization script does not parse or cannot run; the message has line and column."""


class ClaimLost(InvalidState):
    """This node's claim on a unit of work was taken over (it had expired): stop, change nothing more."""
