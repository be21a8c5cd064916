"""The one mapping from a remote id (Metriport's patient, request, document, job and message ids) to a
file or folder name, and the check that a path stays inside its root.

Ids come from signed messages, but they are still remote text: `..` or `a/b` must never leave the
bundle folder (the inbox database lives beside it), and two ids must never share a file. So the mapping
is reversible: letters, digits and `-` stay, every other UTF-8 byte becomes `_xx` (lowercase hex, `_`
itself included), and a leading `-` is escaped too (no option-like names). The name holds no `.`, so an
extension appended after it cannot make two (id, extension) pairs meet. What cannot be mapped (empty,
not UTF-8 text, a name over `MAX_NAME` bytes) is refused, never truncated.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_NAME = 200  # bytes, leaving room for an extension under the usual 255-byte limit
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


class UnsafeName(ValueError):
    """A remote id that has no file name, or a path that would leave its root (the id is not repeated:
    it may be anything)."""


def file_name(remote_id: str, extension: str = "") -> str:
    """The file name of `remote_id` (plus `extension`, e.g. `.xml`); distinct ids give distinct names."""
    try:
        raw = remote_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeName("an id is not UTF-8 text") from None
    if not raw:
        raise UnsafeName("an id is empty")
    name = "".join(
        chr(byte) if byte in _KEPT and not (index == 0 and byte == ord("-")) else f"_{byte:02x}"
        for index, byte in enumerate(raw)
    )
    if len(name) > MAX_NAME:
        raise UnsafeName(f"an id is too long for a file name ({len(raw)} bytes)")
    if extension and not re.fullmatch(r"(\.[a-z0-9]{1,8}){1,2}", extension):
        raise UnsafeName("an extension is not of the form .abc")
    return name + extension


def remote_id(name: str) -> str:
    """The id a `file_name` (without its extension) came from."""
    return _unescape(name).decode("utf-8")


def _unescape(name: str) -> bytes:
    out = bytearray()
    index = 0
    while index < len(name):
        if name[index] == "_":
            out.append(int(name[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(ord(name[index]))
            index += 1
    return bytes(out)


def inside(root: Path, *names: str) -> Path:
    """`root / names...`, refused unless it resolves (symlinks followed) inside `root`."""
    base = Path(root).resolve()
    path = base.joinpath(*names).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafeName("a path would leave its folder")
    return path


def private_folder(path: Path) -> Path:
    """Create `path` and its missing parents 0700 (chmod, so the umask does not matter); folders that
    were already there keep their mode (a parent may be the working directory)."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        os.chmod(folder, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty if it is missing, and make it 0600 whatever the umask."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path
