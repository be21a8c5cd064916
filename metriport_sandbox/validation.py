"""Request validation with Metriport's (Zod) messages: each failure is `(message, path)`, reported as a
400 "Missing or invalid parameters" whose detail joins `"<msg>, on [<path>]"`."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from metriport_sandbox.errors import ApiError, bad_request, invalid_params

US_STATES = set(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH "
    "OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI".split()
)
GENDERS = ("M", "F", "O", "U")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
REQUIRED = "Required"


def npi_is_valid(npi: str) -> bool:
    """NPI check digit: Luhn over "80840" + the 10 digits."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    total = 0
    for index, char in enumerate(reversed("80840" + npi)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return total % 10 == 0


def parse_date(value: str, path: str = "date") -> str:
    """YYYY-MM-DD or 400 "Date must be in format YYYY-MM-DD"."""
    try:
        if not DATE_RE.match(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise invalid_params([("Date must be in format YYYY-MM-DD", path)]) from None
    return value


def _string(body: dict, key: str, path: str, issues: list, required: bool = True, min_len: int = 1) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            issues.append((REQUIRED, f"{path}{key}"))
        return None
    if not isinstance(value, str):
        issues.append((f"Expected string, received {type(value).__name__}", f"{path}{key}"))
        return None
    if len(value.strip()) < min_len:
        issues.append((f"String must contain at least {min_len} character(s)", f"{path}{key}"))
    return value.strip()


def address(raw: Any, path: str, issues: list) -> dict:
    if not isinstance(raw, dict):
        issues.append(("Expected object, received " + type(raw).__name__, path.rstrip(",")))
        return {}
    out: dict[str, Any] = {"addressLine1": _string(raw, "addressLine1", path, issues)}
    if raw.get("addressLine2"):
        out["addressLine2"] = _string(raw, "addressLine2", path, issues)
    out["city"] = _string(raw, "city", path, issues)
    state = _string(raw, "state", path, issues)
    if state is not None and state.upper() not in US_STATES:
        issues.append(("Invalid enum value", f"{path}state"))
    out["state"] = state.upper() if state else state
    zip_code = _string(raw, "zip", path, issues)
    if zip_code is not None and not re.fullmatch(r"\d{5}", zip_code):
        issues.append(("Zip must be a string consisting of 5 numbers", f"{path}zip"))
    out["zip"] = zip_code
    country = raw.get("country", "USA")
    if country != "USA":
        issues.append(('Invalid literal value, expected "USA"', f"{path}country"))
    out["country"] = "USA"
    return out


def facility(body: Any) -> dict:
    if not isinstance(body, dict):
        raise invalid_params([("Expected object, received " + type(body).__name__, "")])
    issues: list = []
    name = _string(body, "name", "", issues)
    npi = _string(body, "npi", "", issues)
    if npi is not None and not npi_is_valid(npi):
        issues.append(("NPI is invalid", "npi"))
    tin = body.get("tin")
    active = body.get("active")
    if active is not None and not isinstance(active, bool):
        issues.append(("Expected boolean, received " + type(active).__name__, "active"))
    addr = address(body.get("address"), "address,", issues) if "address" in body else None
    if addr is None:
        issues.append((REQUIRED, "address"))
    if issues:
        raise invalid_params(issues)
    return {"name": name, "npi": npi, "tin": tin, "active": active, "address": addr}


def demographics(body: Any) -> dict:
    """A patient's demographics (create, update, match); the address may be one object or a list."""
    if not isinstance(body, dict):
        raise invalid_params([("Expected object, received " + type(body).__name__, "")])
    issues: list = []
    out: dict[str, Any] = {
        "firstName": _string(body, "firstName", "", issues),
        "lastName": _string(body, "lastName", "", issues),
    }
    dob = _string(body, "dob", "", issues)
    if dob is not None:
        try:
            parse_date(dob, "dob")
            if date.fromisoformat(dob) > date.today():
                issues.append(("Date can't be in the future", "dob"))
        except ApiError:
            issues.append(("Date must be in format YYYY-MM-DD", "dob"))
    out["dob"] = dob
    gender = body.get("genderAtBirth")
    if gender not in GENDERS:
        issues.append(
            (
                REQUIRED
                if gender is None
                else f"Invalid enum value. Expected 'M' | 'F' | 'O' | 'U', received '{gender}'",
                "genderAtBirth",
            )
        )
    out["genderAtBirth"] = gender
    raw_addresses = body.get("address")
    if raw_addresses is None:
        issues.append((REQUIRED, "address"))
        raw_addresses = []
    if isinstance(raw_addresses, dict):
        raw_addresses = [raw_addresses]
    if isinstance(raw_addresses, list) and not raw_addresses and body.get("address") is not None:
        issues.append(("Array must contain at least 1 element(s)", "address"))
    out["address"] = [address(a, f"address,{i},", issues) for i, a in enumerate(raw_addresses or [])]
    out["personalIdentifiers"] = body.get("personalIdentifiers") or []
    contact = body.get("contact")
    if contact is not None:
        contacts = contact if isinstance(contact, list) else [contact]
        cleaned = []
        for i, item in enumerate(contacts):
            item = dict(item or {})
            phone = item.get("phone")
            if phone:
                digits = re.sub(r"\D", "", str(phone))
                digits = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
                if len(digits) != 10:
                    issues.append(("Phone must be a string consisting of 10 numbers", f"contact,{i},phone"))
                item["phone"] = digits
            email = item.get("email")
            if email and not EMAIL_RE.match(str(email)):
                issues.append(("Invalid email", f"contact,{i},email"))
            if not phone and not email:
                issues.append(("Contact must have either phone or email", f"contact,{i}"))
            cleaned.append(item)
        out["contact"] = cleaned
    if issues:
        raise invalid_params(issues)
    return out


def metadata(body: Any) -> dict[str, str] | None:
    """The optional `{"metadata": {k: v}}` body (extra top-level keys dropped): ≤50 keys, keys 1–40, values ≤500."""
    if body is None or not isinstance(body, dict) or "metadata" not in body or body["metadata"] is None:
        return None
    meta = body["metadata"]
    if not isinstance(meta, dict):
        raise invalid_params([("Expected object, received " + type(meta).__name__, "metadata")])
    issues: list = []
    if len(meta) > 50:
        issues.append(("Record has too many properties", "meta"))
    for key, value in meta.items():
        if not 1 <= len(key) <= 40:
            message = (
                "String must contain at least 1 character(s)"
                if not key
                else "String must contain at most 40 character(s)"
            )
            issues.append((message, f"metadata,{key}"))
        if not isinstance(value, str):
            issues.append(("Expected string, received " + type(value).__name__, f"metadata,{key}"))
        elif len(value) > 500:
            issues.append(("String must contain at most 500 character(s)", f"metadata,{key}"))
    if issues:
        raise invalid_params(issues)
    return dict(meta)


def conversion_type(value: str | None, allowed: tuple[str, ...] = ("json", "pdf", "html")) -> str:
    if value is None:
        raise invalid_params([(REQUIRED, "conversionType")])
    if value not in allowed:
        expected = " | ".join(f"'{a}'" for a in allowed)
        raise invalid_params([(f"Invalid enum value. Expected {expected}, received '{value}'", "conversionType")])
    return value


def resource_list(raw: str | None, valid: set[str] | frozenset[str]) -> list[str]:
    names = [r.strip() for r in (raw or "").split(",") if r.strip()]
    issues = [(f"Invalid enum value, received '{n}'", f"resources,{i}") for i, n in enumerate(names) if n not in valid]
    if issues:
        raise invalid_params(issues)
    return names


def settings_body(body: Any) -> dict:
    """POST /settings: strict `{webhookUrl?, mrFilters?}`; the URL must be valid and ≤2048 characters."""
    if not isinstance(body, dict):
        raise invalid_params([("Expected object, received " + type(body).__name__, "")])
    extra = [k for k in body if k not in ("webhookUrl", "mrFilters")]
    if extra:
        raise invalid_params([("Unrecognized key(s) in object: " + ", ".join(f"'{k}'" for k in extra), "")])
    url = body.get("webhookUrl")
    if url not in (None, "") and (
        not isinstance(url, str) or len(url) > 2048 or not re.match(r"^https?://[^\s/]+", url)
    ):
        raise bad_request("Invalid URL")
    return body
