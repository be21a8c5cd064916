"""A tiny hand-built PDF writer: pages of Helvetica text lines, a correct xref table, nothing else.

Why: the emulator serves real PDFs (the seed `demoN.pdf` documents and the rendered `pdf` summary of
a consolidated query) without adding a PDF library. One function does both. Text is WinAnsi
(Latin-1); other characters become "?". Output is deterministic: no dates, no random ids.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, points
MARGIN = 56
FONT_SIZE = 10
LEADING = 14
TITLE_SIZE = 15
WRAP = 95  # characters per line at 10 pt Helvetica within the margins
LINES_PER_PAGE = (PAGE_HEIGHT - 2 * MARGIN - LEADING * 2) // LEADING


def _pdf_string(text: str) -> bytes:
    raw = text.encode("latin-1", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _wrap(lines: Iterable[str]) -> list[str]:
    wrapped: list[str] = []
    for line in lines:
        line = line.replace("\r", " ").replace("\n", " ").replace("\t", "    ")
        wrapped.extend(textwrap.wrap(line, WRAP, subsequent_indent="    ") or [""])
    return wrapped


def _page_stream(title: str, lines: list[str], page: int, pages: int) -> bytes:
    y = PAGE_HEIGHT - MARGIN
    ops = [b"BT", b"/F2 %d Tf" % TITLE_SIZE, b"%d %d Td" % (MARGIN, y), _pdf_string(title) + b" Tj", b"ET"]
    ops += [b"BT", b"/F1 %d Tf" % FONT_SIZE, b"%d TL" % LEADING, b"%d %d Td" % (MARGIN, y - 2 * LEADING)]
    for line in lines:
        ops.append(_pdf_string(line) + b" '")
    ops.append(b"ET")
    footer = _pdf_string(f"Page {page} of {pages}")
    ops += [b"BT", b"/F1 8 Tf", b"%d %d Td" % (PAGE_WIDTH - MARGIN - 50, MARGIN // 2), footer + b" Tj", b"ET"]
    return b"\n".join(ops)


def pdf_document(title: str, lines: Iterable[str]) -> bytes:
    """A PDF 1.4 file: `title` on each page, then the lines (wrapped, paginated)."""
    text = _wrap(lines)
    chunks = [text[i : i + LINES_PER_PAGE] for i in range(0, len(text), LINES_PER_PAGE)] or [[]]
    # Object numbers: 1 catalog, 2 pages, 3 regular font, 4 bold font, 5 info, then page/content pairs.
    page_ids = [6 + 2 * i for i in range(len(chunks))]
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % len(chunks),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title " + _pdf_string(title) + b" /Producer (metriport-flows sandbox) >>",
    ]
    for number, (page_id, chunk) in enumerate(zip(page_ids, chunks, strict=True), start=1):
        stream = _page_stream(title, chunk, number, len(chunks))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] " % (PAGE_WIDTH, PAGE_HEIGHT)
            + b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)
