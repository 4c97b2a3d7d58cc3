"""Session lifecycle: stages, statuses, archive-job states, and the one table of status changes.

`TRANSITIONS` lists every way a session's status changes, from which statuses to which. Every
set of statuses the rest of dicomd tests against (receivable, archivable, actionable, settable
over HTTP, the CLI's colours) is derived from it here; nothing else spells a status set out.

The table documents the code, it does not police it: each change checks only what its caller
asks for with ``expect=`` (see :func:`require`). A unit test runs the lifecycle end to end and
checks that every change the code makes is one the table allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from dicomd.errors import InvalidState


class Stage(enum.StrEnum):
    PREARCHIVE = "prearchive"
    ARCHIVE = "archive"


class Status(enum.StrEnum):
    """A session's status (XNAT's names, plus REVIEW)."""

    RECEIVING = "RECEIVING"  # data arriving; built once idle
    BUILDING = "BUILDING"  # being summarized (scans, counts, mapped fields)
    READY = "READY"  # built; waits to be archived
    ARCHIVING = "ARCHIVING"  # its files are being written into the archive
    MOVING = "MOVING"  # its folder is being moved to another project
    DELETING = "DELETING"  # being deleted
    ERROR = "ERROR"  # a build or an archive failed
    CONFLICT = "CONFLICT"  # the archive holds something it would clash with
    ARCHIVED = "ARCHIVED"  # an archive session
    REVIEW = "REVIEW"  # dicomd: held for a person (burned-in annotation, ...)


class JobState(enum.StrEnum):
    """An archive job's recorded state (see dicomd.archive)."""

    STAGING = "staging"  # files written into work/; a crash rolls back
    MOVING = "moving"  # plan recorded; a crash rolls forward
    DONE = "done"  # rows swapped; clean-up left
    CLEAN = "clean"  # finished
    FAILED = "failed"  # rolled back


class QuarantineStatus(enum.StrEnum):
    HELD = "held"
    RETRIED = "retried"
    DELETED = "deleted"


class Change(enum.StrEnum):
    """The ways a session's status changes; each is made by one piece of code."""

    OPEN = "open"  # catalog.open_prearchive_session, adopt_session: a new prearchive session
    RECEIVE = "receive"  # catalog.add_instance: new data joins (a running build loses)
    BUILD = "build"  # prearchive.build
    BUILT = "built"  # catalog.finish_build: READY, or ERROR when the build failed
    BUILD_INTERRUPTED = "build interrupted"  # prearchive.recover: a restart found it BUILDING
    LATE_CONFLICT = "late conflict"  # pipeline: late data for an archived study, overwrite none
    SET = "set"  # http.operations.set_status (XNAT's set-status)
    MOVE = "move"  # prearchive.move
    MOVED = "moved"  # catalog.move_session: rebuilt in its new project
    DELETE = "delete"  # prearchive.delete (then its rows are removed)
    ARCHIVE = "archive"  # catalog.begin_archive
    ARCHIVE_STOPPED = "archive stopped"  # catalog.fail_archive: held, conflict, error; a restart rolls back
    COMMIT = "commit"  # catalog.commit_archive: a new archive session (the prearchive row goes)
    MERGE = "merge"  # catalog.commit_archive: more data into an archive session


class Step(enum.Enum):
    """Work under way while a session is in a step's status (a crash leaves it half done)."""

    IN_PLACE = "in place"  # the files stay where they are
    HAND_ON = "hand on"  # the files go elsewhere: into the archive, or to another project
    DISCARD = "discard"  # the files are removed


@dataclass(frozen=True)
class Transition:
    sources: tuple[Status, ...]  # () for a change that creates the session
    targets: tuple[Status, ...]
    step: Step | None = None  # the targets are a step under way
    stage: Stage = Stage.PREARCHIVE


_S = Status
# A prearchive session whose files stay where they are and that no step but a build is working on.
_IN_PLACE = (_S.RECEIVING, _S.BUILDING, _S.READY, _S.ERROR, _S.CONFLICT, _S.REVIEW)

TRANSITIONS: Mapping[Change, Transition] = {
    Change.OPEN: Transition((), (_S.RECEIVING,)),
    Change.RECEIVE: Transition(_IN_PLACE, (_S.RECEIVING,)),
    Change.BUILD: Transition(_IN_PLACE, (_S.BUILDING,), Step.IN_PLACE),
    Change.BUILT: Transition((_S.BUILDING,), (_S.READY, _S.ERROR)),
    Change.BUILD_INTERRUPTED: Transition((_S.BUILDING,), (_S.RECEIVING,)),
    Change.LATE_CONFLICT: Transition((_S.READY,), (_S.CONFLICT,)),
    Change.SET: Transition(_IN_PLACE, (_S.READY, _S.RECEIVING, _S.ERROR)),
    Change.MOVE: Transition(_IN_PLACE, (_S.MOVING,), Step.HAND_ON),
    Change.MOVED: Transition((_S.MOVING,), (_S.RECEIVING,)),
    Change.DELETE: Transition(_IN_PLACE, (_S.DELETING,), Step.DISCARD),
    Change.ARCHIVE: Transition((_S.READY, _S.ERROR, _S.CONFLICT, _S.REVIEW, _S.RECEIVING), (_S.ARCHIVING,),
                               Step.HAND_ON),
    Change.ARCHIVE_STOPPED: Transition((_S.ARCHIVING,), (_S.REVIEW, _S.CONFLICT, _S.ERROR, _S.RECEIVING)),
    Change.COMMIT: Transition((), (_S.ARCHIVED,), stage=Stage.ARCHIVE),
    Change.MERGE: Transition((_S.ARCHIVED,), (_S.ARCHIVED,), stage=Stage.ARCHIVE),
}


def _in_order(statuses: Iterable[Status]) -> tuple[Status, ...]:
    wanted = set(statuses)
    return tuple(s for s in Status if s in wanted)


def _step_statuses(*steps: Step) -> tuple[Status, ...]:
    return _in_order(s for t in TRANSITIONS.values() if t.step in steps for s in t.targets)


# ---------------------------------------------------------------------------- derived sets

#: New data may join a prearchive session in these statuses (it goes back to RECEIVING).
RECEIVABLE: tuple[Status, ...] = TRANSITIONS[Change.RECEIVE].sources
#: A build may start from these (a build again, too: a stuck build is retried).
BUILDABLE: tuple[Status, ...] = TRANSITIONS[Change.BUILD].sources
#: A prearchive session may be archived from these.
ARCHIVABLE: tuple[Status, ...] = TRANSITIONS[Change.ARCHIVE].sources
#: What XNAT's set-status may set (for sessions stuck after a failure).
SETTABLE: tuple[Status, ...] = TRANSITIONS[Change.SET].targets
#: Statuses in which a step is under way.
STEPS: tuple[Status, ...] = _step_statuses(*Step)
#: A session with these statuses is handing its data on: data that arrives for its key is late.
HANDING_ON: tuple[Status, ...] = _step_statuses(Step.HAND_ON)
#: Each stage's statuses, in the enum's order.
STATUSES: Mapping[Stage, tuple[Status, ...]] = {
    stage: _in_order(s for t in TRANSITIONS.values() if t.stage == stage for s in (*t.sources, *t.targets))
    for stage in Stage
}
#: Statuses an operator (or the session watcher) can act on; anything else is a step a crash left half done.
ACTIONABLE: Mapping[Stage, tuple[Status, ...]] = {
    stage: tuple(s for s in statuses if s not in STEPS) for stage, statuses in STATUSES.items()
}


class Tone(enum.Enum):
    """What a status tells an operator at a glance (the CLI colours by it)."""

    BUSY = "busy"  # data arriving, or a step under way
    GOOD = "good"
    PROBLEM = "problem"  # failed or in conflict: someone must look
    HELD = "held"  # waits for a person's decision
    GONE = "gone"


#: The tone of every session and quarantine status.
TONES: Mapping[str, Tone] = {
    **{s: Tone.BUSY for s in (*TRANSITIONS[Change.OPEN].targets, *STEPS)},
    Status.READY: Tone.GOOD,
    Status.ARCHIVED: Tone.GOOD,
    Status.ERROR: Tone.PROBLEM,
    Status.CONFLICT: Tone.PROBLEM,
    Status.REVIEW: Tone.HELD,
    QuarantineStatus.HELD: Tone.HELD,
    QuarantineStatus.RETRIED: Tone.GOOD,
    QuarantineStatus.DELETED: Tone.GONE,
}
#: Prearchive sessions that wait for someone (failed, in conflict or held for review).
NEEDS_ATTENTION: tuple[Status, ...] = _in_order(
    s for s in Status if TONES[s] in (Tone.PROBLEM, Tone.HELD)
)

#: Archive job state -> the states it may go to next.
JOB_TRANSITIONS: Mapping[JobState, tuple[JobState, ...]] = {
    JobState.STAGING: (JobState.MOVING, JobState.FAILED),
    JobState.MOVING: (JobState.DONE,),
    JobState.DONE: (JobState.CLEAN,),
    JobState.CLEAN: (),
    JobState.FAILED: (),
}
#: Jobs in these states are not finished: recovery rolls them back or forward.
OPEN_JOB_STATES: tuple[JobState, ...] = tuple(s for s, nxt in JOB_TRANSITIONS.items() if nxt)


# ---------------------------------------------------------------------------- checks


def allowed(current: str | None, new: str) -> bool:
    """Whether the table lets a session go from ``current`` (None: a new session) to ``new``."""
    for t in TRANSITIONS.values():
        if new in t.targets and (current in t.sources if current is not None else not t.sources):
            return True
    return False


def require(current: str, expect: Sequence[str] | None) -> None:
    """Raise InvalidState unless ``current`` is one of ``expect`` (None: anything goes)."""
    if expect is not None and current not in expect:
        raise InvalidState(f"session is {current}, not {' or '.join(expect)}")


def takes_new_data(status: str | None) -> bool:
    """Whether new data may join a prearchive session with this status (None: it is gone)."""
    return status in RECEIVABLE
