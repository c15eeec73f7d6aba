import datetime
from logging import Logger
import time

from ..backends import BaseBackend
from ..stats import GlobalStatistic, Total

# Width each caption is centred in, and the table layouts (column widths).
_BANNER_WIDTH = 150
_GLOBAL_WIDTHS = (19, 16, 23, 20, 16, 16, 16)
_GLOBAL_CAPTIONS = (
    "Consumer processes",
    "Total time",
    "Total aggegated time",  # sic: lahja's spelling, kept for identical output
    "Propagated events",
    "Received events",
    "Propagated EPS",
    "Received EPS",
)
_GLOBAL_FORMATS = ("", ".5f", ".5f", "", "", ".3f", ".3f")
_DETAIL_WIDTHS = (19, 16, 16, 16, 16, 16, 16, 16, 23)
_DETAIL_CAPTIONS = (
    "Process",
    "Processed Events",
    "First sent",
    "Last received",
    "Fastest",
    "Slowest",
    "AVG",
    "Total duration",
    "Total aggregated time",
)
_DETAIL_FORMATS = ("", "", "", "", ".5f", ".5f", ".5f", ".5f", ".5f")


def _banner(text: str) -> str:
    return format(text, "^" + str(_BANNER_WIDTH))


def _row(widths, formats, values) -> str:  # type: ignore
    cells = (
        format(value, "^" + str(width) + spec)
        for width, spec, value in zip(widths, formats, values)
    )
    return "|" + "|".join(cells) + "|"


def print_global_header(logger: Logger, backend: BaseBackend) -> None:
    logger.info(_banner("+++" + backend.name.upper() + "+++"))
    logger.info(_banner("+++Globals+++"))
    logger.info(_row(_GLOBAL_WIDTHS, ("",) * 7, _GLOBAL_CAPTIONS))


def print_global_entry(
    logger: Logger,
    num_consumer_processes: int,
    num_events: int,
    global_statistic: GlobalStatistic,
) -> None:
    elapsed = time.time() - global_statistic._created_at
    totals = global_statistic._entries
    received = sum(total.num_total for total in totals)
    aggregated = sum(total.total_aggregated_time for total in totals)
    logger.info(
        _row(
            _GLOBAL_WIDTHS,
            _GLOBAL_FORMATS,
            (
                num_consumer_processes,
                elapsed,
                aggregated,
                num_events,
                received,
                num_events / elapsed,
                received / elapsed,
            ),
        )
    )


def print_entry_header(logger: Logger) -> None:
    logger.info(_banner("+++Process Details+++"))
    logger.info(_row(_DETAIL_WIDTHS, ("",) * 9, _DETAIL_CAPTIONS))


def to_readable_timestamp(timestamp: float) -> str:
    # UTC wall clock, millisecond precision: HH:MM:SS.mmm
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%H:%M:%S.%f")[:-3]


def print_entry_line(logger: Logger, total: Total) -> None:
    logger.info(
        _row(
            _DETAIL_WIDTHS,
            _DETAIL_FORMATS,
            (
                total.caption,
                total.num_total,
                to_readable_timestamp(total.first_sent),
                to_readable_timestamp(total.last_received),
                total.duration_fastest,
                total.duration_slowest,
                total.duration_avg,
                total.total_duration,
                total.total_aggregated_time,
            ),
        )
    )


def print_full_report(
    logger: Logger,
    backend: BaseBackend,
    num_consumer_processes: int,
    num_events: int,
    global_statistic: GlobalStatistic,
) -> None:
    print_global_header(logger, backend)
    print_global_entry(logger, num_consumer_processes, num_events, global_statistic)
    print_entry_header(logger)
    for total in global_statistic._entries:
        print_entry_line(logger, total)
