"""Builds one seed patient's clinical record as FHIR R4 resources (plain dicts).

Why a builder: the resources cross-reference each other (Encounter -> Practitioner/Organization,
Observation -> Encounter, DiagnosticReport -> Observations, MedicationRequest -> Medication ...), so
one object hands out ids from the caller's `random.Random` and keeps the references consistent.
References are relative (`Type/id`), the shape Metriport's consolidated bundles use; `fhir_data`
puts every target in the same bundle. Everything comes from the rng: same rng state, same record.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time, timedelta

from metriport_sandbox import fhir_codes as fc
from metriport_sandbox.seed import SEED_ORGANIZATIONS

FIRST_DAY = date(2014, 1, 1)
LAST_DAY = date(2024, 12, 31)

_GENDERS = {"F": "female", "M": "male", "O": "other", "U": "unknown"}
_PRACTITIONERS = (("Alvarez", "Maria"), ("Chen", "David"), ("Okafor", "Ngozi"), ("Lindqvist", "Erik"))
_ALLERGY_CATEGORY = {"91936005": "medication", "91939003": "medication", "91935009": "food"}


def fhir_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def npi(rng: random.Random) -> str:
    """A 10-digit NPI with a valid Luhn check digit (over the 80840 prefix, as CMS defines it)."""
    base = "1" + "".join(str(rng.randrange(10)) for _ in range(8))
    total = 24  # the constant contribution of the "80840" prefix
    for index, digit in enumerate(reversed(base)):
        value = int(digit) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return base + str((10 - total % 10) % 10)


def quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": fc.UCUM, "code": unit}


def ref(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def category(system: str, code: str, display: str) -> list[dict]:
    return [{"coding": [{"system": system, "code": code, "display": display}]}]


class RecordBuilder:
    def __init__(self, patient_id: str, seed_key: str, demographics: dict, rng: random.Random) -> None:
        self.rng = rng
        self.profile = fc.PROFILES[seed_key]
        self.female = demographics.get("genderAtBirth") == "F"
        self.patient = self._patient(patient_id, demographics)
        self.resources: list[dict] = [self.patient]
        self.encounters: list[tuple[dict, datetime]] = []
        self.problems: dict[str, dict] = {}

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(self, resource_type: str, **fields) -> dict:
        resource = {"resourceType": resource_type, "id": self.new_id(), **fields}
        self.resources.append(resource)
        return resource

    def subject(self) -> dict:
        return ref(self.patient)

    def _patient(self, patient_id: str, demo: dict) -> dict:
        addresses = [
            {
                "use": "home",
                "line": [a["addressLine1"], *([a["addressLine2"]] if a.get("addressLine2") else [])],
                "city": a["city"],
                "state": a["state"],
                "postalCode": a["zip"],
                "country": a.get("country", "USA"),
            }
            for a in demo.get("address", [])
        ]
        return {
            "resourceType": "Patient",
            "id": patient_id,
            "name": [{"use": "official", "family": demo["lastName"], "given": [demo["firstName"]]}],
            "gender": _GENDERS.get(demo.get("genderAtBirth", "U"), "unknown"),
            "birthDate": demo["dob"],
            "address": addresses,
        }

    def build(self) -> list[dict]:
        home = self.patient["address"][0] if self.patient["address"] else {}
        self.organization = self.add(
            "Organization",
            identifier=[{"system": fc.NPI, "value": npi(self.rng)}],
            name=self.rng.choice(SEED_ORGANIZATIONS),
            address=[{k: home[k] for k in ("city", "state", "postalCode", "country") if k in home}],
        )
        family, given = self.rng.choice(_PRACTITIONERS)
        self.practitioner = self.add(
            "Practitioner",
            identifier=[{"system": fc.NPI, "value": npi(self.rng)}],
            name=[{"family": family, "given": [given], "prefix": ["Dr."]}],
        )
        self._encounters()
        self._conditions()
        self._vitals()
        self._labs()
        self._medications()
        self._allergies()
        self._immunizations()
        self._procedures()
        self._document_references()
        return self.resources

    def _random_moment(self, first: date = FIRST_DAY, last: date = LAST_DAY) -> datetime:
        day = first + timedelta(days=self.rng.randrange((last - first).days + 1))
        return datetime.combine(day, time(self.rng.randrange(8, 17), self.rng.choice((0, 15, 30, 45))), UTC)

    def _encounters(self) -> None:
        moments = sorted(self._random_moment() for _ in range(self.rng.randint(7, 10)))
        for index, start in enumerate(moments):
            kinds = fc.ENCOUNTER_KINDS if index % 3 == 2 else fc.ENCOUNTER_KINDS[:3]
            class_code, class_display, kind = self.rng.choice(kinds)
            length = {"AMB": timedelta(minutes=30), "EMER": timedelta(hours=4)}.get(
                class_code, timedelta(days=self.rng.randint(2, 4))
            )
            encounter = self.add(
                "Encounter",
                status="finished",
                **{"class": {"system": fc.ACT_CODE, "code": class_code, "display": class_display}},
                type=[kind.concept()],
                subject=self.subject(),
                participant=[{"individual": ref(self.practitioner)}],
                period={"start": fhir_datetime(start), "end": fhir_datetime(start + length)},
                serviceProvider=ref(self.organization),
            )
            self.encounters.append((encounter, start))

    def _encounter(self) -> tuple[dict, datetime]:
        return self.rng.choice(self.encounters)

    def _conditions(self) -> None:
        problems = self.profile.problems
        visits = sorted(self.rng.sample(self.encounters, min(len(problems), len(self.encounters))), key=lambda v: v[1])
        for index, problem in enumerate(problems):
            encounter, start = visits[index % len(visits)]
            active = problem.chronic
            clinical = "active" if active else "resolved"
            fields = {
                "clinicalStatus": {"coding": [{"system": fc.CONDITION_CLINICAL, "code": clinical}]},
                "verificationStatus": {"coding": [{"system": fc.CONDITION_VERIFICATION, "code": "confirmed"}]},
                "category": category(
                    fc.CONDITION_CATEGORY,
                    *(
                        ("problem-list-item", "Problem List Item")
                        if active
                        else ("encounter-diagnosis", "Encounter Diagnosis")
                    ),
                ),
                "code": problem.snomed.concept(problem.icd10),
                "subject": self.subject(),
                "encounter": ref(encounter),
                "onsetDateTime": fhir_datetime(start),
                "recordedDate": fhir_datetime(start),
                "recorder": ref(self.practitioner),
            }
            if not active:
                fields["abatementDateTime"] = fhir_datetime(start + timedelta(days=self.rng.randint(7, 30)))
            self.problems[problem.snomed.code] = self.add("Condition", **fields)

    def _value(self, measure: fc.Measure, shift: float = 1.0) -> float:
        low, high = measure.normal
        centre = (low + high) / 2
        if measure.code.code in self.profile.abnormal:
            centre = high * self.rng.uniform(1.1, 1.35)
        value = centre * shift + self.rng.uniform(-0.08, 0.08) * (high - low)
        return round(value, measure.decimals) if measure.decimals else float(round(value))

    def _observation(self, measure: fc.Measure, encounter: dict, at: datetime, lab: bool, value: float) -> dict:
        kind = ("laboratory", "Laboratory") if lab else ("vital-signs", "Vital Signs")
        fields: dict = {
            "status": "final",
            "category": category(fc.OBS_CATEGORY, *kind),
            "code": measure.code.concept(),
            "subject": self.subject(),
            "encounter": ref(encounter),
            "effectiveDateTime": fhir_datetime(at),
            "valueQuantity": quantity(value, measure.unit),
        }
        if lab:
            low, high = measure.normal
            flag = ("H", "High") if value > high else ("L", "Low") if value < low else ("N", "Normal")
            fields["interpretation"] = category(fc.INTERPRETATION, *flag)
            fields["referenceRange"] = [{"low": quantity(low, measure.unit), "high": quantity(high, measure.unit)}]
        return self.add("Observation", **fields)

    def _vitals(self) -> None:
        height = (163.0 if self.female else 177.0) + self.rng.uniform(-6, 6)
        weight = (height / 100) ** 2 * self.rng.uniform(21, 31)
        for encounter, at in self.encounters:
            systolic, diastolic = self._value(fc.SYSTOLIC), self._value(fc.DIASTOLIC)
            self.add(
                "Observation",
                status="final",
                category=category(fc.OBS_CATEGORY, "vital-signs", "Vital Signs"),
                code=fc.BP_PANEL.concept(),
                subject=self.subject(),
                encounter=ref(encounter),
                effectiveDateTime=fhir_datetime(at),
                component=[
                    {"code": m.code.concept(), "valueQuantity": quantity(v, m.unit)}
                    for m, v in ((fc.SYSTOLIC, systolic), (fc.DIASTOLIC, diastolic))
                ],
            )
            weight_now = round(weight * self.rng.uniform(0.97, 1.03), 1)
            for measure, value in (
                (fc.HEART_RATE, self._value(fc.HEART_RATE)),
                (fc.RESP_RATE, self._value(fc.RESP_RATE)),
                (fc.TEMPERATURE, self._value(fc.TEMPERATURE)),
                (fc.SPO2, min(100.0, self._value(fc.SPO2))),
                (fc.HEIGHT, round(height, 1)),
                (fc.WEIGHT, weight_now),
                (fc.BMI, round(weight_now / (height / 100) ** 2, 1)),
            ):
                self._observation(measure, encounter, at, lab=False, value=value)

    def _labs(self) -> None:
        for encounter, at in self.encounters[::2]:
            for code, measures in self.rng.sample(fc.LAB_PANELS, 2):
                collected = at + timedelta(minutes=20)
                results = [self._observation(m, encounter, collected, True, self._value(m)) for m in measures]
                self.add(
                    "DiagnosticReport",
                    status="final",
                    category=category(fc.DIAGNOSTIC_SERVICE, "LAB", "Laboratory"),
                    code=code.concept(),
                    subject=self.subject(),
                    encounter=ref(encounter),
                    effectiveDateTime=fhir_datetime(collected),
                    issued=fhir_datetime(collected + timedelta(hours=6)),
                    performer=[ref(self.organization)],
                    result=[ref(r) for r in results],
                )

    def _medications(self) -> None:
        for drug in fc.DRUGS:
            condition = self.problems.get(drug.treats)
            if condition is None:
                continue
            chronic = "abatementDateTime" not in condition
            started = datetime.fromisoformat(condition["onsetDateTime"].replace("Z", "+00:00"))
            medication = self.add("Medication", code=drug.rxnorm.concept(), status="active")
            request = self.add(
                "MedicationRequest",
                status="active" if chronic else "completed",
                intent="order",
                medicationReference=ref(medication),
                subject=self.subject(),
                encounter=condition["encounter"],
                authoredOn=fhir_datetime(started),
                requester=ref(self.practitioner),
                reasonReference=[ref(condition)],
                dosageInstruction=[{"text": drug.dosage}],
            )
            period = {"start": fhir_datetime(started)}
            if not chronic:
                period["end"] = condition["abatementDateTime"]
            self.add(
                "MedicationStatement",
                status="active" if chronic else "completed",
                medicationReference=ref(medication),
                subject=self.subject(),
                context=condition["encounter"],
                effectivePeriod=period,
                dateAsserted=fhir_datetime(started),
                derivedFrom=[ref(request)],
                reasonReference=[ref(condition)],
                dosage=[{"text": drug.dosage}],
            )

    def _allergies(self) -> None:
        for index in self.profile.allergies:
            substance, code, reaction, criticality = fc.ALLERGIES[index]
            encounter, at = self._encounter()
            self.add(
                "AllergyIntolerance",
                clinicalStatus={"coding": [{"system": fc.ALLERGY_CLINICAL, "code": "active"}]},
                verificationStatus={"coding": [{"system": fc.ALLERGY_VERIFICATION, "code": "confirmed"}]},
                type="allergy",
                category=[_ALLERGY_CATEGORY.get(code.code, "environment")],
                criticality=criticality,
                code=code.concept(),
                patient=self.subject(),
                encounter=ref(encounter),
                onsetDateTime=fhir_datetime(at),
                recordedDate=fhir_datetime(at),
                recorder=ref(self.practitioner),
                reaction=[{"substance": substance.concept(), "manifestation": [reaction.concept()]}],
            )

    def _immunizations(self) -> None:
        for index in self.profile.vaccines:
            at = self._random_moment()
            self.add(
                "Immunization",
                status="completed",
                vaccineCode=fc.VACCINES[index].concept(),
                patient=self.subject(),
                occurrenceDateTime=fhir_datetime(at),
                primarySource=True,
                lotNumber=f"{self.rng.choice('ABCDEFGHJK')}{self.rng.randrange(10000, 99999)}",
                performer=[{"actor": ref(self.practitioner)}],
            )

    def _procedures(self) -> None:
        for index in self.profile.procedures:
            encounter, at = self._encounter()
            self.add(
                "Procedure",
                status="completed",
                code=fc.PROCEDURES[index].concept(),
                subject=self.subject(),
                encounter=ref(encounter),
                performedDateTime=fhir_datetime(at + timedelta(minutes=10)),
                performer=[{"actor": ref(self.practitioner)}, {"actor": ref(self.organization)}],
            )

    def _document_references(self) -> None:
        for encounter, at in self.encounters[-2:]:
            self.add(
                "DocumentReference",
                status="current",
                type=fc.CCDA_DOC_TYPE.concept(),
                subject=self.subject(),
                date=fhir_datetime(at + timedelta(hours=1)),
                author=[ref(self.organization)],
                description="C-CDA R2.1 Patient Record",
                content=[
                    {
                        "attachment": {
                            "contentType": "application/xml",
                            "title": f"{self.new_id()}.xml",
                            "creation": fhir_datetime(at + timedelta(hours=1)),
                        }
                    }
                ],
                context={"encounter": [ref(encounter)], "period": encounter["period"]},
            )
