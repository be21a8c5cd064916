"""The bytes of the seven seed documents: a C-CDA R2.1 XML, three PDFs, two JPEGs and a TIFF.

Why: clients download these through signed URLs and may open, hash or convert them, so they are
small but real files (correct magic numbers and structure), and the same bytes every time for a
given (file name, seed patient). The C-CDA carries the seed patient's demographics and problem list
(emulator data, not PHI); images are tiny grey pictures with a comment naming the file.
"""

from __future__ import annotations

import struct
import uuid
from xml.sax.saxutils import escape, quoteattr

from metriport_sandbox import fhir_codes
from metriport_sandbox.pdf import pdf_document
from metriport_sandbox.seed import SEED_PATIENTS

_NAMESPACE = uuid.UUID("6f1c3a2e-7d3b-4a51-9a56-0d1f5e2b8c10")
CCDA_EFFECTIVE = "20230615103000-0000"


def document_bytes(file_name: str, seed_key: str) -> bytes:
    """The content of seed document `file_name` (its stored title) for the seed patient `seed_key`."""
    if seed_key not in SEED_PATIENTS:
        raise KeyError(f"not a seed patient: {seed_key!r}")
    extension = file_name.rsplit(".", 1)[-1].lower()
    if extension == "xml":
        return ccda_xml(seed_key)
    if extension == "pdf":
        return examination_pdf(file_name, seed_key)
    if extension in ("jpeg", "jpg"):
        return tiny_jpeg(f"{file_name} ({seed_key})")
    if extension in ("tif", "tiff"):
        return tiny_tiff(f"{file_name} ({seed_key})", shade=sum(file_name.encode()) % 200)
    raise ValueError(f"no seed document content for {file_name!r}")


def _oid_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


def _section(template: str, code: str, title: str, rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td>{escape(a)}</td><td>{escape(b)}</td></tr>" for a, b in rows)
    return (
        f"<component><section><templateId root={quoteattr(template)}/>"
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC"/>'
        f"<title>{escape(title)}</title>"
        f"<text><table><thead><tr><th>Item</th><th>Code</th></tr></thead><tbody>{cells}</tbody></table></text>"
        "</section></component>"
    )


def ccda_xml(seed_key: str) -> bytes:
    """A minimal C-CDA R2.1 Continuity of Care Document (header + narrative-only sections)."""
    seed = SEED_PATIENTS[seed_key]
    profile = fhir_codes.PROFILES[seed_key]
    address = seed.address
    gender = {"F": "Female", "M": "Male"}.get(seed.gender_at_birth, "Unknown")
    problems = [(p.snomed.display, f"SNOMED {p.snomed.code} / ICD-10 {p.icd10.code}") for p in profile.problems]
    allergies = [
        (fhir_codes.ALLERGIES[i][1].display, f"SNOMED {fhir_codes.ALLERGIES[i][1].code}") for i in profile.allergies
    ]
    treated = {p.snomed.code for p in profile.problems}
    medications = [(d.rxnorm.display, f"RxNorm {d.rxnorm.code}") for d in fhir_codes.DRUGS if d.treats in treated]
    sections = "".join(
        (
            _section("2.16.840.1.113883.10.20.22.2.5", "11450-4", "Problems", problems),
            _section("2.16.840.1.113883.10.20.22.2.6", "48765-2", "Allergies and Adverse Reactions", allergies),
            _section("2.16.840.1.113883.10.20.22.2.1", "10160-0", "Medications", medications),
        )
    )
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:sdtc="urn:hl7-org:sdtc"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<realmCode code="US"/>
<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
<templateId root="2.16.840.1.113883.10.20.22.1.1" extension="2015-08-01"/>
<templateId root="2.16.840.1.113883.10.20.22.1.2" extension="2015-08-01"/>
<id root="{_oid_uuid("ccda", seed_key)}"/>
<code code="34133-9" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC"
 displayName="Summarization of Episode Note"/>
<title>C-CDA R2.1 Patient Record</title>
<effectiveTime value="{CCDA_EFFECTIVE}"/>
<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
<languageCode code="en-US"/>
<recordTarget><patientRole>
<id root="{_oid_uuid("patient", seed_key)}"/>
<addr use="HP"><streetAddressLine>{escape(address.address_line1)}</streetAddressLine>
<city>{escape(address.city)}</city><state>{address.state}</state>
<postalCode>{address.zip}</postalCode><country>US</country></addr>
<patient>
<name use="L"><given>{escape(seed.first_name)}</given><family>{escape(seed.last_name)}</family></name>
<administrativeGenderCode code="{seed.gender_at_birth}" codeSystem="2.16.840.1.113883.5.1" displayName="{gender}"/>
<birthTime value="{seed.dob.replace("-", "")}"/>
</patient>
</patientRole></recordTarget>
<author><time value="{CCDA_EFFECTIVE}"/><assignedAuthor><id root="2.16.840.1.113883.4.6" extension="1234567893"/>
<assignedPerson><name><given>Maria</given><family>Alvarez</family></name></assignedPerson></assignedAuthor></author>
<custodian><assignedCustodian><representedCustodianOrganization><id root="{_oid_uuid("org", seed_key)}"/>
<name>Metriport Sandbox Emulator</name></representedCustodianOrganization></assignedCustodian></custodian>
<component><structuredBody>{sections}</structuredBody></component>
</ClinicalDocument>
"""
    return xml.encode("utf-8")


_FINDINGS = (
    "General: alert, oriented, in no acute distress.",
    "HEENT: normocephalic, atraumatic; pupils equal and reactive.",
    "Cardiovascular: regular rate and rhythm, no murmurs.",
    "Respiratory: clear to auscultation bilaterally.",
    "Abdomen: soft, non-tender, non-distended.",
    "Extremities: no edema.",
    "Neurological: cranial nerves II-XII intact.",
)


_VISITS = {"demo2.pdf": "2022-07-21", "demo3.pdf": "2023-03-22", "demo4.pdf": "2023-06-12"}


def examination_pdf(file_name: str, seed_key: str) -> bytes:
    seed = SEED_PATIENTS[seed_key]
    visit = _VISITS.get(file_name, "2023-06-15")
    lines = [
        f"Patient: {seed.first_name} {seed.last_name}    DOB: {seed.dob}    Sex: {seed.gender_at_birth}",
        f"Visit date: {visit}    Document: {file_name}",
        "",
        *_FINDINGS,
        "",
        "Assessment: " + "; ".join(p.snomed.display for p in fhir_codes.PROFILES[seed_key].problems),
    ]
    return pdf_document("Physical Examination", lines)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def tiny_jpeg(comment: str) -> bytes:
    """A baseline JPEG: one 8x8 mid-grey block (DC 0, no AC), single-symbol Huffman tables."""
    return b"".join(
        (
            b"\xff\xd8",  # SOI
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),  # APP0 JFIF 1.1, 1:1 aspect
            _segment(0xFE, comment.encode("utf-8")),  # COM
            _segment(0xDB, b"\x00" + b"\x01" * 64),  # DQT table 0, all ones
            _segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00"),  # SOF0: 8 bit, 8x8, 1 component
            _segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00"),  # DHT DC0: one code of length 1 -> 0
            _segment(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00"),  # DHT AC0: one code of length 1 -> EOB
            _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # SOS: component 1 uses tables 0/0
            b"\x3f",  # bits "0" (DC diff 0) "0" (EOB), padded with ones
            b"\xff\xd9",  # EOI
        )
    )


def tiny_tiff(description: str, shade: int = 96, size: int = 8) -> bytes:
    """A little-endian baseline TIFF: one uncompressed size x size greyscale strip with a description."""
    pixels = bytes((shade + (x + y) * 4) % 256 for y in range(size) for x in range(size))
    text = description.encode("ascii", errors="replace") + b"\x00"
    tags = 13
    ifd_at = 8
    data_at = ifd_at + 2 + tags * 12 + 4
    text_at = data_at
    res_at = text_at + len(text) + (len(text) % 2)
    pixels_at = res_at + 16
    entries = [
        (256, 3, 1, size),  # ImageWidth
        (257, 3, 1, size),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # PhotometricInterpretation: BlackIsZero
        (270, 2, len(text), text_at),  # ImageDescription
        (273, 4, 1, pixels_at),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 3, 1, size),  # RowsPerStrip
        (279, 4, 1, len(pixels)),  # StripByteCounts
        (282, 5, 1, res_at),  # XResolution
        (283, 5, 1, res_at + 8),  # YResolution
        (296, 3, 1, 2),  # ResolutionUnit: inch
    ]
    packed = [
        struct.pack("<HHIHH", tag, kind, count, value, 0)  # SHORT values sit left-justified in 4 bytes
        if kind == 3
        else struct.pack("<HHII", tag, kind, count, value)
        for tag, kind, count, value in entries
    ]
    ifd = struct.pack("<H", tags) + b"".join(packed) + struct.pack("<I", 0)
    header = b"II*\x00" + struct.pack("<I", ifd_at)
    padding = b"\x00" * (len(text) % 2)
    resolution = struct.pack("<IIII", 72, 1, 72, 1)
    return header + ifd + text + padding + resolution + pixels
