"""What may reach a log or an error message: never a signed URL's query (it grants access to PHI for
minutes). One function redacts it wherever text that may hold a URL is stored as an error or put in an
exception, and httpx/httpcore (which log every request's full URL at INFO) stay at WARNING in every
process the project starts.
"""

from __future__ import annotations

import logging
import re

HTTP_LOGGERS = ("httpx", "httpcore", "httpx_retries")
REDACTED = "<redacted>"
# A URL's query (and fragment) up to whitespace, a quote or a closing bracket.
_URL_QUERY = re.compile(r"(?P<base>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>()]*)[?#][^\s'\"<>()]*")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact_urls(text: str) -> str:
    """`text` with the query of every URL in it redacted (for exception messages and error columns)."""
    return _URL_QUERY.sub(lambda match: f"{match.group('base')}?{REDACTED}", text)


def quiet_http_logs() -> None:
    """httpx, httpcore and httpx_retries log below WARNING with full URLs: keep them at WARNING."""
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_process_logging(level: str) -> None:
    """Logging of a process the project starts (receiver, dispatcher): `level` for ours, WARNING for
    the HTTP libraries whatever `level` says."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    quiet_http_logs()
