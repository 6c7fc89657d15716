"""What an operator can do to one running integration: pause, resume, restart (``inlet pause`` / ``core.api``).

Each integration of a :class:`~core.supervisor.Supervisor` has one :class:`Control`. Its methods run on the
supervisor's event loop (the API's server thread schedules them with ``call_soon_threadsafe``):

- **pause**: ``halt`` is set; the pipeline stops reading (the read in progress is abandoned, no new upstream
  request is made), waits for the acknowledgements of what it handed to the sink, commits those positions and
  returns; the connector is closed, and the integration waits in state ``paused``.
- **resume**: the integration opens a fresh connector and reads on from its checkpoint (so nothing is read twice
  and nothing skipped: the checkpoint is what was committed).
- **restart**: like a pause followed at once by a resume, and it cuts a restart backoff short; a paused
  integration is resumed by it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

__all__ = ["ACTIONS", "Action", "Control"]

Action = Literal["pause", "resume", "restart"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "restart")


class Control:
    """The operator's switches for one integration; event-loop side only."""

    def __init__(self) -> None:
        self.halt = asyncio.Event()
        """Set: the current read pass (or sleep) ends, in-flight batches committed. Also set when stopping."""
        self.resumed = asyncio.Event()
        self.paused = False
        self.restart_requested = False
        self.released = False
        """Set while the integration runs on another replica of the fleet (``core.fleet``)."""

    def apply(self, action: Action) -> None:
        """Carry out ``action`` (idempotent: pausing a paused integration changes nothing)."""
        if action == "pause":
            if not self.paused:
                self.paused = True
                self.resumed.clear()
                self.halt.set()
        elif action == "resume":
            if self.paused:
                self.paused = False
                self.resumed.set()
        else:
            self.paused = False
            self.restart_requested = True
            self.resumed.set()
            self.halt.set()

    def wake(self) -> None:
        """The run is stopping: end any read pass, sleep or pause."""
        self.halt.set()
        self.resumed.set()

    def release(self) -> None:
        """The fleet gives the integration to another replica: end the read pass (in-flight batches committed)
        and its run here; :meth:`claim` undoes it when the integration is assigned here again."""
        self.released = True
        self.wake()

    def claim(self) -> None:
        """Assigned to this replica (again): its run may start."""
        self.released = False

    def begin(self) -> bool:
        """Called before a connector is built: clears ``halt``; True when an operator asked for this restart."""
        restarted, self.restart_requested = self.restart_requested, False
        self.halt.clear()
        return restarted
