"""Reading the journal from beside its writer, record by record, as it grows: for the receivers
of events (syncd.outbox), each at its own pace.

Recent records come from memory (the writer hands each acknowledged record over as it is
appended); a reader further behind reads the segments on disk, one at a time, so a receiver
that was down for a day costs a segment of memory, not the day's records.
"""

from __future__ import annotations

import threading
from collections import deque

from syncd.core.journal_state import Record
from syncd.journal.store import Journal, check_segments, segments

RECENT = 1000  # records kept in memory for readers close behind the writer


class Follower:
    def __init__(self, journal: Journal, keep: int = RECENT) -> None:
        self.journal = journal
        self._recent: deque[Record] = deque(maxlen=keep)
        self._grown = threading.Condition()
        # The last record handed over: the journal counts one before its listeners hear of it.
        self._handed = journal.state.last_seq
        journal.subscribe(self._appended)

    def close(self) -> None:
        self.journal.unsubscribe(self._appended)
        with self._grown:
            self._grown.notify_all()

    def _appended(self, record: Record) -> None:
        with self._grown:
            self._recent.append(record)
            self._handed = record.seq
            self._grown.notify_all()

    @property
    def last_seq(self) -> int:
        """The last record readers may take."""
        return self._handed

    def wait(self, after: int, timeout: float) -> bool:
        """Wait until a record after seq `after` is acknowledged (True), or `timeout` passes."""
        with self._grown:
            return self._grown.wait_for(lambda: self.last_seq > after, timeout)

    def after(self, seq: int, limit: int = 500) -> list[Record]:
        """Up to `limit` acknowledged records after seq `seq`, in order."""
        last = self.last_seq
        if seq >= last:
            return []
        with self._grown:
            if self._recent and self._recent[0].seq <= seq + 1:
                start = seq + 1 - self._recent[0].seq
                return [
                    self._recent[i] for i in range(start, min(len(self._recent), start + limit))
                ]
        return self._from_disk(seq, min(last, seq + limit))

    def _from_disk(self, seq: int, last: int) -> list[Record]:
        """Records seq+1 .. `last` from the segment that holds seq+1 (JournalCorrupt if the
        segments do not hold them)."""
        found = segments(self.journal.directory)
        holder = [s for s in found if s.first_seq <= seq + 1]
        if not holder:
            return []
        checked = check_segments([holder[-1]], keep_after=seq, trust_start=True)
        return [r for r in checked.records if r.seq <= last]
