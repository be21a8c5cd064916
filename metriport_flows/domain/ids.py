"""One shape for the ids that arrive from outside (Metriport's uuids, document ids, job ids).

It starts with a letter or digit (so never `.`, `..` or an option-like `-p1`) and holds only letters,
digits, `.`, `_` and `-`; it also keeps names and other free text out of flow parameters. Each field
bounds its own length.
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_ID = re.compile(ID_PATTERN)


def is_id(value: str, max_length: int = 64) -> bool:
    return len(value) <= max_length and _ID.match(value) is not None
