"""The runs one explorer serves: the run it was started on and the other published runs of the same study, each
opened on first use and a few kept open, so the run picker and a link naming an older run work without a restart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from analysis.runs.reader import PublishedRun, RunNotFound, RunUnreadable, open_sibling
from analysis.runs.store import RunStore
from app.views import Explorer


class RunRegistry:
    """Explorers of a study's published runs, keyed by run id (only ids the store lists are ever opened)."""

    KEPT = 3
    """Runs held open at once besides the first; each holds its tables and a memory map of its heatmaps."""

    def __init__(self, first: PublishedRun):
        self.first = Explorer(first)
        self.store = RunStore(first.run_dir.parent)
        self._open: OrderedDict[str, Explorer] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def first_id(self) -> str:
        return self.first.run.run_id

    def run_ids(self) -> list[str]:
        """The store's complete runs, newest first (the first run always among them)."""
        found = set(self.store.run_ids()) | {self.first_id}
        return sorted(found, reverse=True)

    def latest_id(self) -> str:
        """The run the store publishes now (``runs/latest``), or the first run if the pointer is unreadable."""
        try:
            return self.store.latest_id() or self.first_id
        except RunNotFound:
            return self.first_id

    def explorer(self, run_id) -> Explorer | None:
        """The explorer of ``run_id``, or None when it names no readable run of the store (a browser's value)."""
        if run_id == self.first_id or run_id is None:
            return self.first
        if not isinstance(run_id, str) or run_id not in self.store.run_ids():
            return None
        with self._lock:
            if run_id in self._open:
                self._open.move_to_end(run_id)
                return self._open[run_id]
        try:
            ex = Explorer(open_sibling(self.first.run, run_id))
        except (RunNotFound, RunUnreadable, ValueError):
            return None
        with self._lock:
            self._open[run_id] = ex
            while len(self._open) > self.KEPT:
                self._open.popitem(last=False)
        return ex
