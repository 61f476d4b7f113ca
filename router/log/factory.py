"""Building the inference log from settings: the sink registry and the writer.

``DATABASE_URL`` set: PostgreSQL; unset: SQLite at ``<home>/log/inference.db``. The spool is
always ``<home>/log/spool/``, the journal ``<home>/log/journal/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lora_router.ground.home import Home
from lora_router.router.log import leftovers
from lora_router.router.log.features import LabelsFor, TokenCounter
from lora_router.router.log.journal import Journal
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter
from lora_router.router.settings import Settings

# one registry of sink kinds, keyed by what selects them
_SINKS: dict[str, Callable[[Settings, Home], LogSink]] = {
    "postgres": lambda s, h: PostgresSink(s.database_url or ""),
    "sqlite": lambda s, h: SqliteSink(sqlite_path(h)),
}


def _home(home: Home | Path | str) -> Home:
    return home if isinstance(home, Home) else Home.at(home)


def sqlite_path(home: Home) -> Path:
    return home.log_dir / "inference.db"


def sink_kind(settings: Settings) -> str:
    return "postgres" if settings.database_url else "sqlite"


def build_sink(settings: Settings, home: Home | Path | str | None = None) -> LogSink:
    """The sink the settings select (not opened; call ``await sink.open()``)."""
    return _SINKS[sink_kind(settings)](settings, _home(home or settings.home))


def build_spool(settings: Settings, home: Home | Path | str | None = None) -> Spool:
    """The home's spool (``<home>/log/spool/``); seals open segments of dead processes."""
    return Spool(_home(home or settings.home).log_dir / "spool")


def build_journal(settings: Settings, home: Home | Path | str | None = None) -> Journal:
    """The home's journal (``<home>/log/journal/``), fsynced every ``log_fsync_interval_s``."""
    return Journal(
        _home(home or settings.home).log_dir / "journal",
        fsync_interval_s=settings.log_fsync_interval_s,
    )


def scrub_local(settings: Settings, subject: str) -> int:
    """Remove a subject's raw inputs from this home's local files that no live writer owns
    (sealed spool segments, journal segments of dead processes); returns how many."""
    h = _home(settings.home)
    return build_spool(settings, h).scrub_subject(subject) + leftovers.scrub_subject(
        h.log_dir / "journal", subject
    )


def build_log_writer(
    settings: Settings,
    home: Home | Path | str | None = None,
    *,
    labels_for: LabelsFor | None = None,
    token_counter: TokenCounter | None = None,
    sink: LogSink | None = None,
) -> LogWriter:
    """The writer the gateway owns: ``await start()`` in the lifespan, ``record(rec)`` per
    request (and per shadow copy), ``await close()`` on shutdown.

    ``labels_for(route)`` returns a classification route's labels (empty for other routes);
    ``token_counter(text)`` counts prompt tokens when a record carries no ``prompt_tokens``.
    """
    h = _home(home or settings.home)
    builder = RowBuilder(
        labels_for=labels_for,
        token_counter=token_counter,
        input_store=settings.input_store_enabled,
    )
    return LogWriter(
        sink or build_sink(settings, h),
        build_spool(settings, h),
        builder,
        journal=build_journal(settings, h),
        batch_size=settings.log_batch_size,
        flush_ms=settings.log_flush_ms,
        queue_max=settings.log_queue_max,
        input_retention_days=(
            settings.input_store_retention_days if settings.input_store_enabled else None
        ),
    )
