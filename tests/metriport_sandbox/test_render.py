"""Rendered summaries and seed document bytes: real HTML, structurally correct PDFs, valid images."""

from __future__ import annotations

import random
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metriport_sandbox.documents import document_bytes
from metriport_sandbox.fhir_data import filter_resources, patient_resources
from metriport_sandbox.pdf import pdf_document
from metriport_sandbox.render import render_html, render_pdf
from metriport_sandbox.seed import SEED_PATIENTS, seed_document_files

VOID = {"meta", "br", "img", "hr", "link", "input"}


class TreeChecker(HTMLParser):
    """Checks that every element is closed in order and collects text and section ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.sections: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(dict(attrs)["id"])
        if tag == "tr":
            self.rows += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(raw: bytes) -> TreeChecker:
    checker = TreeChecker()
    checker.feed(raw.decode("utf-8"))
    checker.close()
    assert checker.stack == []
    return checker


def check_pdf(raw: bytes) -> list[int]:
    """Assert the PDF's xref points at each object's header; return the object numbers."""
    assert raw.startswith(b"%PDF-1.4\n")
    assert raw.endswith(b"%%EOF\n")
    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", raw).group(1))
    assert raw[startxref:].startswith(b"xref\n0 ")
    count = int(re.match(rb"xref\n0 (\d+)\n", raw[startxref:]).group(1))
    table = raw[startxref:].split(b"\n", 2)[2]
    entries = [table[i * 20 : (i + 1) * 20] for i in range(count)]
    assert entries[0] == b"0000000000 65535 f \n"
    for number, entry in enumerate(entries[1:], start=1):
        assert entry.endswith(b" 00000 n \n")
        offset = int(entry[:10])
        assert raw[offset:].startswith(b"%d 0 obj\n" % number)
    trailer = table[count * 20 :]
    assert trailer.startswith(b"trailer\n<< /Size %d /Root 1 0 R" % count)
    for length, body in re.findall(rb"<< /Length (\d+) >>\nstream\n(.*?)\nendstream", raw, re.S):
        assert int(length) == len(body)
    return list(range(1, count))


@pytest.fixture(scope="module")
def kyla() -> list[dict]:
    return patient_resources("p-kyla", "kyla", random.Random(5))


def test_html_is_well_formed_with_sections(kyla):
    page = parse_html(render_html(kyla))
    assert {
        "conditions",
        "medications",
        "allergies",
        "immunizations",
        "procedures",
        "lab-reports",
        "vital-signs",
        "lab-results",
        "encounters",
        "documents",
    } <= set(page.sections)
    text = " ".join(page.text)
    assert "Patient: Kyla Fields" in text and "1927-05-23" in text
    assert "Atrial fibrillation" in text and "apixaban 5 MG Oral Tablet" in text


def test_html_escapes_text(kyla):
    hostile = [dict(kyla[0], name=[{"family": "<script>alert(1)</script>", "given": ["A&B"]}])]
    raw = render_html(hostile)
    assert b"<script>" not in raw
    assert b"&lt;script&gt;" in raw and b"A&amp;B" in raw
    parse_html(raw)


def test_html_of_filtered_record_only_has_those_sections(kyla):
    page = parse_html(render_html(filter_resources(kyla, {"Immunization"}, None, None)))
    assert page.sections == ["immunizations"]
    assert "No clinical data." in " ".join(parse_html(render_html(kyla[:1])).text)
    goal = {"resourceType": "Goal", "id": "g1", "description": {"text": "Walk daily"}}
    assert parse_html(render_html([kyla[0], goal])).sections == ["goal"]


def test_pdf_summary_structure(kyla):
    raw = render_pdf(kyla)
    objects = check_pdf(raw)
    assert len(objects) >= 7  # catalog, pages, 2 fonts, info, one page + content
    assert b"/Count " in raw and b"(Patient: Kyla Fields) '" in raw
    assert render_pdf(kyla) == raw


def test_pdf_writer_escapes_and_paginates():
    raw = pdf_document("T (1)", [f"line {i} \\ (x) caf\u00e9 \u2713" for i in range(130)])
    check_pdf(raw)
    assert b"/Count 3" in raw
    assert b"(line 0 \\\\ \\(x\\) caf\xe9 ?) '" in raw
    check_pdf(pdf_document("empty", []))


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.text(max_size=300), max_size=80))
def test_pdf_writer_xref_always_correct(lines):
    check_pdf(pdf_document("Any", lines))


# --- seed document bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SEED_PATIENTS))
def test_seed_documents_are_real_files(key):
    for _, name in seed_document_files(key):
        raw = document_bytes(name, key)
        assert raw == document_bytes(name, key)
        assert 0 < len(raw) < 20_000
        if name.endswith(".xml"):
            root = ET.fromstring(raw)
            ns = {"h": "urn:hl7-org:v3"}
            assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"
            template = root.find("h:templateId[@root='2.16.840.1.113883.10.20.22.1.1']", ns)
            assert template.get("extension") == "2015-08-01"
            assert root.find("h:code", ns).get("code") == "34133-9"
            name_el = root.find("h:recordTarget/h:patientRole/h:patient/h:name", ns)
            seed = SEED_PATIENTS[key]
            assert (name_el.findtext("h:given", namespaces=ns), name_el.findtext("h:family", namespaces=ns)) == (
                seed.first_name,
                seed.last_name,
            )
            assert len(root.findall(".//h:section", ns)) == 3
        elif name.endswith(".pdf"):
            check_pdf(raw)
        elif name.endswith(".jpeg"):
            check_jpeg(raw)
        else:
            check_tiff(raw)


def test_document_bytes_differ_by_file_and_patient():
    assert document_bytes("demo2.pdf", "jane") != document_bytes("demo3.pdf", "jane")
    assert document_bytes("demo5.jpeg", "jane") != document_bytes("demo5.jpeg", "ollie")
    with pytest.raises(KeyError):
        document_bytes("demo2.pdf", "bob")
    with pytest.raises(ValueError):
        document_bytes("notes.docx", "jane")


def check_jpeg(raw: bytes) -> None:
    assert raw[:2] == b"\xff\xd8" and raw[-2:] == b"\xff\xd9"
    markers, at = [], 2
    while raw[at] == 0xFF and raw[at + 1] != 0xDA:
        marker, length = raw[at + 1], struct.unpack(">H", raw[at + 2 : at + 4])[0]
        markers.append(marker)
        at += 2 + length
    assert raw[at + 1] == 0xDA  # start of scan follows the header segments exactly
    assert markers[0] == 0xE0 and raw[6:11] == b"JFIF\x00"
    assert {0xDB, 0xC0, 0xC4} <= set(markers)


def check_tiff(raw: bytes) -> None:
    assert raw[:4] == b"II*\x00"
    ifd = struct.unpack("<I", raw[4:8])[0]
    count = struct.unpack("<H", raw[ifd : ifd + 2])[0]
    tags = {}
    for i in range(count):
        tag, kind, n, value = struct.unpack("<HHII", raw[ifd + 2 + 12 * i : ifd + 14 + 12 * i])
        tags[tag] = value & 0xFFFF if kind == 3 else value
    assert list(tags) == sorted(tags)
    width, height = tags[256], tags[257]
    assert tags[279] == width * height and tags[273] + tags[279] == len(raw)
