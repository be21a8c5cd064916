"""Clinical vocabulary for the emulator's FHIR data: LOINC, SNOMED CT, ICD-10-CM, RxNorm, CVX, UCUM.

Why: consumers of Metriport data key on real codes (LOINC for vitals and labs, RxNorm for drugs), so
the emulator uses real, common codes with their usual displays. The lists are hand-picked, not a
terminology service; each seed patient gets a clinical profile that fits their age.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self, *others: Code) -> dict:
        return {"coding": [self.coding(), *(o.coding() for o in others)], "text": self.display}


@dataclass(frozen=True)
class Measure:
    """A vital sign or lab test: its LOINC code, UCUM unit and a (low, high) normal range."""

    code: Code
    unit: str
    normal: tuple[float, float]
    decimals: int = 0


@dataclass(frozen=True)
class Problem:
    snomed: Code
    icd10: Code
    chronic: bool = True


@dataclass(frozen=True)
class Drug:
    rxnorm: Code
    dosage: str
    treats: str  # the SNOMED code of the problem it is for


def _loinc(code: str, display: str) -> Code:
    return Code(LOINC, code, display)


def _problem(sct: str, icd: str, display: str, icd_display: str, chronic: bool = True) -> Problem:
    return Problem(Code(SNOMED, sct, display), Code(ICD10, icd, icd_display), chronic)


BP_PANEL = _loinc("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Measure(_loinc("8480-6", "Systolic blood pressure"), "mm[Hg]", (90, 120))
DIASTOLIC = Measure(_loinc("8462-4", "Diastolic blood pressure"), "mm[Hg]", (60, 80))
HEART_RATE = Measure(_loinc("8867-4", "Heart rate"), "/min", (60, 100))
RESP_RATE = Measure(_loinc("9279-1", "Respiratory rate"), "/min", (12, 20))
TEMPERATURE = Measure(_loinc("8310-5", "Body temperature"), "Cel", (36.1, 37.2), 1)
SPO2 = Measure(_loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), "%", (95, 100))
WEIGHT = Measure(_loinc("29463-7", "Body weight"), "kg", (50, 90), 1)
HEIGHT = Measure(_loinc("8302-2", "Body height"), "cm", (150, 190), 1)
BMI = Measure(_loinc("39156-5", "Body mass index (BMI) [Ratio]"), "kg/m2", (18.5, 25), 1)

HBA1C = Measure(_loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%", (4.0, 5.6), 1)
GLUCOSE = Measure(_loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma"), "mg/dL", (70, 99))
CREATININE = Measure(_loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), "mg/dL", (0.6, 1.2), 2)
EGFR = Measure(
    _loinc("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma"),
    "mL/min/{1.73_m2}",
    (60, 120),
)
SODIUM = Measure(_loinc("2951-2", "Sodium [Moles/volume] in Serum or Plasma"), "mmol/L", (135, 145))
POTASSIUM = Measure(_loinc("2823-3", "Potassium [Moles/volume] in Serum or Plasma"), "mmol/L", (3.5, 5.1), 1)
CHOLESTEROL = Measure(_loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"), "mg/dL", (125, 200))
TRIGLYCERIDE = Measure(_loinc("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"), "mg/dL", (40, 150))
HDL = Measure(_loinc("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"), "mg/dL", (40, 80))
LDL = Measure(
    _loinc("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay"), "mg/dL", (50, 100)
)
HEMOGLOBIN = Measure(_loinc("718-7", "Hemoglobin [Mass/volume] in Blood"), "g/dL", (12.0, 17.0), 1)
WBC = Measure(_loinc("6690-2", "Leukocytes [#/volume] in Blood by Automated count"), "10*3/uL", (4.5, 11.0), 1)
PLATELETS = Measure(_loinc("777-3", "Platelets [#/volume] in Blood by Automated count"), "10*3/uL", (150, 400))

# Lab panels: the DiagnosticReport code and the Observations it references as `result`.
LAB_PANELS: tuple[tuple[Code, tuple[Measure, ...]], ...] = (
    (_loinc("51990-0", "Basic metabolic panel - Blood"), (GLUCOSE, CREATININE, EGFR, SODIUM, POTASSIUM)),
    (_loinc("57698-3", "Lipid panel with direct LDL - Serum or Plasma"), (CHOLESTEROL, TRIGLYCERIDE, HDL, LDL)),
    (_loinc("58410-2", "CBC panel - Blood by Automated count"), (HEMOGLOBIN, WBC, PLATELETS)),
    (_loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), (HBA1C,)),
)

HYPERTENSION = _problem("59621000", "I10", "Essential hypertension", "Essential (primary) hypertension")
DIABETES = _problem("44054006", "E11.9", "Type 2 diabetes mellitus", "Type 2 diabetes mellitus without complications")
HYPERLIPIDEMIA = _problem("55822004", "E78.5", "Hyperlipidemia", "Hyperlipidemia, unspecified")
ASTHMA = _problem("195967001", "J45.909", "Asthma", "Unspecified asthma, uncomplicated")
ANXIETY = _problem("21897009", "F41.1", "Generalized anxiety disorder", "Generalized anxiety disorder")
MIGRAINE = _problem(
    "37796009", "G43.909", "Migraine", "Migraine, unspecified, not intractable, without status migrainosus"
)
COPD = _problem(
    "13645005", "J44.9", "Chronic obstructive lung disease", "Chronic obstructive pulmonary disease, unspecified"
)
AFIB = _problem("49436004", "I48.91", "Atrial fibrillation", "Unspecified atrial fibrillation")
OSTEOARTHRITIS = _problem("239873007", "M17.9", "Osteoarthritis of knee", "Osteoarthritis of knee, unspecified")
CKD3 = _problem("433144002", "N18.30", "Chronic kidney disease stage 3", "Chronic kidney disease, stage 3 unspecified")
OSTEOPOROSIS = _problem(
    "64859006", "M81.0", "Osteoporosis", "Age-related osteoporosis without current pathological fracture"
)
DEMENTIA = _problem("26929004", "G30.9", "Alzheimer's disease", "Alzheimer's disease, unspecified")
BRONCHITIS = _problem("10509002", "J20.9", "Acute bronchitis", "Acute bronchitis, unspecified", chronic=False)
BACK_PAIN = _problem("279039007", "M54.50", "Low back pain", "Low back pain, unspecified", chronic=False)
SINUSITIS = _problem("36971009", "J01.90", "Sinusitis", "Acute sinusitis, unspecified", chronic=False)


def _drug(rxcui: str, display: str, dosage: str, treats: Problem) -> Drug:
    return Drug(Code(RXNORM, rxcui, display), dosage, treats.snomed.code)


DRUGS: tuple[Drug, ...] = (
    _drug("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily", HYPERTENSION),
    _drug("197361", "amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily", HYPERTENSION),
    _drug(
        "861007",
        "metformin hydrochloride 500 MG Oral Tablet",
        "Take 1 tablet by mouth twice daily with meals",
        DIABETES,
    ),
    _drug("617310", "atorvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth at bedtime", HYPERLIPIDEMIA),
    _drug(
        "745679",
        "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs every 4 to 6 hours as needed",
        ASTHMA,
    ),
    _drug("312941", "sertraline 50 MG Oral Tablet", "Take 1 tablet by mouth once daily", ANXIETY),
    _drug("1364445", "apixaban 5 MG Oral Tablet", "Take 1 tablet by mouth twice daily", AFIB),
    _drug(
        "198440",
        "acetaminophen 500 MG Oral Tablet",
        "Take 2 tablets by mouth every 6 hours as needed for pain",
        OSTEOARTHRITIS,
    ),
    _drug("904419", "alendronate 70 MG Oral Tablet", "Take 1 tablet by mouth once weekly", OSTEOPOROSIS),
    _drug("997223", "donepezil hydrochloride 10 MG Oral Tablet", "Take 1 tablet by mouth at bedtime", DEMENTIA),
    _drug("197806", "ibuprofen 600 MG Oral Tablet", "Take 1 tablet by mouth every 8 hours as needed", BACK_PAIN),
    _drug(
        "308182", "amoxicillin 500 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 10 days", SINUSITIS
    ),
)

# (substance, clinical code, reaction manifestation, criticality)
ALLERGIES: tuple[tuple[Code, Code, Code, str], ...] = (
    (
        Code(SNOMED, "764146007", "Penicillin"),
        Code(SNOMED, "91936005", "Allergy to penicillin"),
        Code(SNOMED, "247472004", "Hives"),
        "high",
    ),
    (
        Code(SNOMED, "762952008", "Peanut"),
        Code(SNOMED, "91935009", "Allergy to peanut"),
        Code(SNOMED, "39579001", "Anaphylaxis"),
        "high",
    ),
    (
        Code(SNOMED, "387406002", "Sulfonamide"),
        Code(SNOMED, "91939003", "Allergy to sulfonamide"),
        Code(SNOMED, "271807003", "Eruption of skin"),
        "low",
    ),
    (
        Code(SNOMED, "111088007", "Latex"),
        Code(SNOMED, "300916003", "Latex allergy"),
        Code(SNOMED, "40275004", "Contact dermatitis"),
        "low",
    ),
)

VACCINES: tuple[Code, ...] = (
    Code(CVX, "140", "Influenza, seasonal, injectable, preservative free"),
    Code(CVX, "208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"),
    Code(CVX, "115", "Tdap"),
    Code(CVX, "33", "pneumococcal polysaccharide vaccine, 23 valent"),
    Code(CVX, "187", "zoster vaccine recombinant"),
    Code(CVX, "43", "hepatitis B vaccine, adult dosage"),
)

PROCEDURES: tuple[Code, ...] = (
    Code(SNOMED, "73761001", "Colonoscopy"),
    Code(SNOMED, "29303009", "Electrocardiographic procedure"),
    Code(SNOMED, "399208008", "Plain chest X-ray"),
    Code(SNOMED, "71651007", "Mammography"),
    Code(SNOMED, "80146002", "Appendectomy"),
    Code(SNOMED, "609588000", "Total knee replacement"),
)

# (class code, class display, SNOMED encounter type)
ENCOUNTER_KINDS: tuple[tuple[str, str, Code], ...] = (
    ("AMB", "ambulatory", Code(SNOMED, "185349003", "Encounter for check up")),
    ("AMB", "ambulatory", Code(SNOMED, "185345009", "Encounter for symptom")),
    ("AMB", "ambulatory", Code(SNOMED, "390906007", "Follow-up encounter")),
    ("EMER", "emergency", Code(SNOMED, "50849002", "Emergency room admission")),
    ("IMP", "inpatient encounter", Code(SNOMED, "32485007", "Hospital admission")),
)

CCDA_DOC_TYPE = Code(LOINC, "34133-9", "Summarization of episode note")


@dataclass(frozen=True)
class Profile:
    """A seed patient's clinical picture: problems, allergies, procedures, and lab drift."""

    problems: tuple[Problem, ...]
    allergies: tuple[int, ...]  # indexes into ALLERGIES
    procedures: tuple[int, ...]  # indexes into PROCEDURES
    vaccines: tuple[int, ...]  # indexes into VACCINES
    abnormal: tuple[str, ...] = ()  # LOINC codes that run high for this patient


PROFILES: dict[str, Profile] = {
    "jane": Profile((ASTHMA, ANXIETY, MIGRAINE, SINUSITIS), (1,), (2,), (0, 1, 2, 5)),
    "chris": Profile((HYPERLIPIDEMIA, BACK_PAIN, BRONCHITIS), (2,), (2, 4), (0, 1, 2)),
    "ollie": Profile(
        (HYPERTENSION, DIABETES, HYPERLIPIDEMIA, CKD3),
        (0,),
        (0, 1),
        (0, 1, 3, 4),
        ("4548-4", "2345-7", "2160-0", "2093-3", "8480-6"),
    ),
    "andreas": Profile(
        (HYPERTENSION, COPD, OSTEOARTHRITIS, BRONCHITIS),
        (3, 0),
        (1, 2, 5),
        (0, 1, 3, 4),
        ("8480-6", "8462-4", "2093-3"),
    ),
    "kyla": Profile(
        (AFIB, OSTEOPOROSIS, DEMENTIA, HYPERTENSION, BACK_PAIN),
        (0,),
        (1, 3),
        (0, 1, 3, 4),
        ("8867-4", "8480-6"),
    ),
}
