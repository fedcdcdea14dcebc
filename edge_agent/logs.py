"""Agent logs on stderr: JSON lines, or journald-fit text when stderr is the journal.

* :class:`JsonLinesFormatter` — one JSON object per record (``log_format = "json"``), for
  journald and log shippers;
* :class:`JournalFormatter` — ``<priority>`` prefixes journald turns into levels, no
  duplicate timestamp; :func:`log_formatter` picks it when stderr is the journal;
* :func:`setup_logging` — install the chosen formatter on the root logger.

Raises nothing: an unknown level name falls back to INFO.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC ISO 8601), level, logger, msg, pid, extras, exc."""

    _STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(), "pid": record.process}
        for k, v in vars(record).items():
            if k not in self._STD and not k.startswith("_"):
                d[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """``<N>logger: message`` — journald reads N as the priority and adds its own timestamp."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        pri = self.PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{pri}>{line}" for line in text.splitlines())


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """True when stderr is connected to journald (``$JOURNAL_STREAM`` = its dev:inode)."""
    js = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return js == f"{st.st_dev}:{st.st_ino}"


def log_formatter(fmt: str = "text") -> logging.Formatter:
    """``json`` → JSON lines; ``text`` → journal-style when stderr is the journal, else plain."""
    if fmt == "json":
        return JsonLinesFormatter()
    if stderr_is_journal():
        return JournalFormatter()
    return logging.Formatter(TEXT_FORMAT)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Logs on stderr in ``fmt`` (``text`` | ``json``, see :func:`log_formatter`) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
