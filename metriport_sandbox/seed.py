"""Metriport's sandbox seed data: the five seed patients and the seven documents they all get.

Why: the sandbox recognises a patient by first name only (case-insensitive) and answers a document
query with the same seven canned documents (docs/metriport.md §5.1). The demographics are the CODE's values
(`sandbox-seed-data.ts`), not the docs' "Springfield OR" ones, because `patientMatches()` compares
against the code.

Addresses: Jane, Ollie, Andreas and Kyla use the street/zip of Metriport's seed file. docs/metriport.md
gives only "Chicago IL" for Chris (later Metriport versions dropped him), so his street and zip are
invented in the same style (a round zip ending in 00). This is a documented emulator choice.

Document fields follow `addSandboxFields()`: XML gets LOINC 34133-9 (system "http://loinc.org/", with
the trailing slash the code uses); PDF, TIFF and images get a display-only coding. `status` is
`current` when the random date index is < 3, else `superseded`; photographs are always `current`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SeedAddress:
    address_line1: str
    city: str
    state: str
    zip: str
    country: str = "USA"

    def as_api(self) -> dict[str, str]:
        """The address as Metriport's API writes it (camelCase keys)."""
        return {
            "addressLine1": self.address_line1,
            "city": self.city,
            "state": self.state,
            "zip": self.zip,
            "country": self.country,
        }


@dataclass(frozen=True)
class SeedPatient:
    key: str
    first_name: str
    last_name: str
    dob: str
    gender_at_birth: str
    address: SeedAddress
    xml_name: str  # the C-CDA file name stem, which keeps the docs' last names (Brown)

    def demographics(self) -> dict:
        """The demographics Metriport's `patientMatches()` compares, in API shape."""
        return {
            "firstName": self.first_name,
            "lastName": self.last_name,
            "dob": self.dob,
            "genderAtBirth": self.gender_at_birth,
            "address": [self.address.as_api()],
        }


SEED_PATIENTS: dict[str, SeedPatient] = {
    "jane": SeedPatient(
        "jane",
        "Jane",
        "Smith",
        "1996-02-10",
        "F",
        SeedAddress("123 Arsenal St", "Phoenix", "AZ", "85300"),
        "JaneSmith",
    ),
    "chris": SeedPatient(
        "chris",
        "Chris",
        "Smith",
        "1995-01-01",
        "M",
        SeedAddress("456 Lakeshore Dr", "Chicago", "IL", "60600"),
        "ChrisSmith",
    ),
    "ollie": SeedPatient(
        "ollie",
        "Ollie",
        "Brown",
        "1946-03-18",
        "M",
        SeedAddress("201 Armada St", "Harrisburg", "PA", "15300"),
        "OllieBrown",
    ),
    "andreas": SeedPatient(
        "andreas",
        "Andreas",
        "Sims",
        "1952-01-01",
        "M",
        SeedAddress("4430 York St", "Jefferson City", "MO", "64000"),
        "AndreasBrown",
    ),
    "kyla": SeedPatient(
        "kyla",
        "Kyla",
        "Fields",
        "1927-05-23",
        "F",
        SeedAddress("332 16th St", "Portland", "ME", "04000"),
        "KylaBrown",
    ),
}


@dataclass(frozen=True)
class SeedDocument:
    file_name_template: str  # "{xml_name}" is replaced by the patient's XML stem
    mime_type: str
    description: str
    type_coding: dict[str, str] = field(default_factory=dict)

    def file_name(self, seed_key: str) -> str:
        return self.file_name_template.format(xml_name=SEED_PATIENTS[seed_key].xml_name)

    @property
    def type(self) -> dict:
        """The DTO `type` CodeableConcept."""
        return {"coding": [dict(self.type_coding)]}

    @property
    def always_current(self) -> bool:
        return self.description == PHOTO_DESCRIPTION


_CCDA_CODING = {"system": "http://loinc.org/", "code": "34133-9", "display": "Summarization of episode note"}
PHOTO_DESCRIPTION = "Clinical Photograph or X-ray"
_PDF = ("application/pdf", "Physical Examination", {"display": "Encounter"})
_JPEG = ("image/jpeg", PHOTO_DESCRIPTION, {"display": "Photograph"})

SEED_DOCUMENTS: tuple[SeedDocument, ...] = (
    SeedDocument("{xml_name}.xml", "application/xml", "C-CDA R2.1 Patient Record", _CCDA_CODING),
    SeedDocument("demo2.pdf", *_PDF),
    SeedDocument("demo3.pdf", *_PDF),
    SeedDocument("demo4.pdf", *_PDF),
    SeedDocument("demo5.jpeg", *_JPEG),
    SeedDocument("demo6.tif", "image/tiff", "Pathology Report", {"display": "Pathology Report"}),
    SeedDocument("demo7.jpeg", *_JPEG),
)

# `randomDates` of sandbox document query: the attachment creation ("indexed") date is drawn from here.
INDEXED_DATES: tuple[str, ...] = (
    "2023-06-15",
    "2023-06-10",
    "2023-06-12",
    "2023-06-20",
    "2023-03-22",
    "2022-12-03",
    "2018-09-29",
    "2022-07-21",
    "2019-04-10",
    "2023-05-03",
    "2020-02-19",
)

# The contained Organization the sandbox adds to each DocumentReference (docs/metriport.md §5.1 item 7).
SEED_ORGANIZATIONS: tuple[str, ...] = ("UCSF Medical", "Sutter Health", "Northridge Hospital")


def seed_key(first_name: str) -> str | None:
    """The seed key for a first name, matched case-insensitively as `getSandboxSeedData()` does."""
    key = first_name.lower()
    return key if key in SEED_PATIENTS else None


def is_seed(first_name: str) -> bool:
    return seed_key(first_name) is not None


def indexed_and_status(document: SeedDocument, rng: random.Random) -> tuple[str, str]:
    """The random (indexed date, status) pair the sandbox gives a document, as `addSandboxFields()`."""
    index = rng.randrange(len(INDEXED_DATES))
    status = "current" if index < 3 or document.always_current else "superseded"
    return INDEXED_DATES[index], status


def seed_document_files(seed_key_: str) -> list[tuple[SeedDocument, str]]:
    """Each seed document with its file name for this patient, in the sandbox's order."""
    return [(doc, doc.file_name(seed_key_)) for doc in SEED_DOCUMENTS]
