"""CPU time of groups of processes over one phase of a benchmark, from ``/proc`` (psutil).

Wall-clock rates on a shared machine follow its load; the CPU time a process spends per
message does much less. A :class:`CpuSampler` holds named groups, each a function that returns
the group's process ids *now* (the dispatchers and their children, a broker's process tree,
the PostgreSQL backends that serve one database). :meth:`begin` notes each known process's
utime+stime, :meth:`sample` (call it often) finds new members and reads every member again,
:meth:`end` reads a last time. A group's figure is the sum over its members of (last reading -
reading at ``begin``, or 0 for a process first seen later). A process that exits between two
samples loses the CPU it spent since the last one: sample every fraction of a second, and see
``exited`` for how many members were lost that way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psutil

PidSource = Callable[[], Awaitable[set[int]]]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (its own, not its children's), or None once it has gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def tree(pid: int) -> set[int]:
    """A process and all its descendants (an empty set if it has gone)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


@dataclass
class _Group:
    source: PidSource
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    exited: set[int] = field(default_factory=set)

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)


class CpuSampler:
    """CPU seconds per named group of processes between :meth:`begin` and :meth:`end`."""

    def __init__(self, groups: dict[str, PidSource]) -> None:
        self._groups = {name: _Group(source) for name, source in groups.items()}
        self._started = False

    async def _read(self, group: _Group) -> None:
        with contextlib.suppress(psutil.Error):
            current = await group.source()
            for pid in current | set(group.last):
                if pid in group.exited:
                    continue
                seconds = cpu_seconds(pid)
                if seconds is None:
                    group.exited.add(pid)
                    continue
                if not self._started:
                    group.first[pid] = seconds
                group.last[pid] = seconds

    def reset(self) -> None:
        """Forget every reading: the next :meth:`begin` starts a new phase."""
        for group in self._groups.values():
            group.first.clear()
            group.last.clear()
            group.exited.clear()
        self._started = False

    async def begin(self) -> None:
        for group in self._groups.values():
            await self._read(group)
        self._started = True

    async def sample(self) -> None:
        for group in self._groups.values():
            await self._read(group)

    async def end(self) -> dict[str, float]:
        await self.sample()
        return self.seconds()

    def seconds(self) -> dict[str, float]:
        return {name: group.seconds for name, group in self._groups.items()}

    def members(self) -> dict[str, int]:
        """How many processes each group counted (exited ones included)."""
        return {name: len(group.last) for name, group in self._groups.items()}

    def exited(self) -> dict[str, int]:
        return {name: len(group.exited) for name, group in self._groups.items()}
