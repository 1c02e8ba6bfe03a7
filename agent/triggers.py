"""From error events to diagnoses: a burst of one code becomes one diagnosis that counts
its repeats, and an hourly cap protects the terminal and its link.

Timeline of one code: the first event opens a group; the group is diagnosed once no new
event of that code came for `settle_s` (or `max_wait_s` after it opened). Events of the
same code up to `debounce_s` after the group opened are repeats: counted, not diagnosed
again. Monotonic time throughout, so a wall-clock jump changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from agent.sources import ErrorEvent

log = logging.getLogger("posdiag.triggers")
HOUR_S = 3600.0


class Group:
    """Events of one code (and scheme) diagnosed together; `opened` and `last` are
    monotonic times. A plain class: the resident agent imports no dataclasses."""

    __slots__ = ("code", "scheme", "opened", "last", "events")

    def __init__(self, code: str, scheme: str | None, opened: float, last: float) -> None:
        self.code, self.scheme, self.opened, self.last = code, scheme, opened, last
        self.events: list[ErrorEvent] = []

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.code, self.scheme)


class Gate:
    def __init__(
        self,
        settle_s: float,
        max_wait_s: float,
        debounce_s: float,
        max_per_hour: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_s, self.max_wait_s, self.debounce_s = settle_s, max_wait_s, debounce_s
        self.max_per_hour = max_per_hour
        self.clock = clock
        self.open: dict[tuple[str, str | None], Group] = {}
        self.closed: dict[tuple[str, str | None], Group] = {}
        self.diagnosed: deque[float] = deque()

    def add(self, event: ErrorEvent) -> bool:
        """Count the event in; True when it opened a group, so a diagnosis will follow."""
        now = self.clock()
        key = (event.code, event.scheme)
        recent = self.closed.get(key)
        if recent is not None and now - recent.opened < self.debounce_s:
            recent.events.append(event)
            log.info("code %s repeated (%d within the debounce window)", event.code, len(recent.events))
            event.done()
            if event.reply:
                event.reply({"repeat": True, "repeat_of": recent.events[0].id, "events": len(recent.events)})
            return False
        group = self.open.get(key)
        opened = group is None
        if group is None:
            group = self.open[key] = Group(event.code, event.scheme, now, now)
        group.events.append(event)
        group.last = now
        return opened

    def due(self) -> list[Group]:
        """Groups ready for diagnosis, in the order they opened; over the hourly cap they
        are dropped (their events done) and logged."""
        now = self.clock()
        ready = [g for g in self.open.values() if now - g.last >= self.settle_s or now - g.opened >= self.max_wait_s]
        ready.sort(key=lambda g: g.opened)
        while self.diagnosed and now - self.diagnosed[0] > HOUR_S:
            self.diagnosed.popleft()
        allowed = []
        for group in ready:
            del self.open[group.key]
            self.closed[group.key] = group
            if len(self.diagnosed) >= self.max_per_hour:
                log.warning("hourly cap of %d diagnoses reached: code %s (%d events) not diagnosed", self.max_per_hour, group.code, len(group.events))
                for event in group.events:
                    event.done()
                    if event.reply:
                        event.reply({"ok": False, "error": f"hourly cap of {self.max_per_hour} diagnoses reached"})
                continue
            self.diagnosed.append(now)
            allowed.append(group)
        for key in [k for k, g in self.closed.items() if now - g.opened >= self.debounce_s]:
            del self.closed[key]
        return allowed

    def wait_hint(self) -> float | None:
        """Seconds until the next group may be due, None when nothing is open."""
        if not self.open:
            return None
        now = self.clock()
        return max(0.0, min(min(g.last + self.settle_s, g.opened + self.max_wait_s) - now for g in self.open.values()))
