import time
from typing import List

from lahja.tools.benchmark.typing import CrunchedMeasureEntry, RawMeasureEntry, Total


class LocalStatistic:
    """The (sent, received) times one consumer recorded."""

    def __init__(self) -> None:
        self._entries: List[RawMeasureEntry] = []

    def add(self, entry: RawMeasureEntry) -> None:
        self._entries.append(entry)

    def crunch(self, caption: str) -> Total:
        crunched = [
            CrunchedMeasureEntry(sent, received, received - sent)
            for sent, received in self._entries
        ]
        if not crunched:
            raise ValueError("no measurements to crunch")
        durations = [entry.duration for entry in crunched]
        aggregated = sum(durations)
        first_sent = min(entry.sent_at for entry in crunched)
        last_received = max(entry.received_at for entry in crunched)
        return Total(
            caption=caption,
            num_total=len(crunched),
            duration_fastest=min(durations),
            duration_slowest=max(durations),
            duration_avg=aggregated / len(crunched),
            total_aggregated_time=aggregated,
            total_duration=last_received - first_sent,
            first_sent=first_sent,
            last_received=last_received,
        )


class GlobalStatistic:
    """The consumers' totals, as the reporter collects them."""

    def __init__(self) -> None:
        self._created_at = time.time()
        self._entries: List[Total] = []

    def add(self, total: Total) -> None:
        self._entries.append(total)

    def __len__(self) -> int:
        return len(self._entries)
