"""Personal data: e-mail addresses, phone numbers, payment cards, IBANs and national identifiers.

Every detector pairs a pattern with a check that a random string rarely passes (see docs/moderation.md):
phone numbers are parsed and validated against numbering plans (`phonenumbers`), card numbers need a known
issuer prefix and the Luhn checksum, IBANs the ISO 13616 mod-97 checksum and the country's length, national
identifiers their own check digit or format rules (`python-stdnum`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.it import codicefiscale
from stdnum.us import ssn

from openft.data.moderation.findings import Match

DEFAULT_PHONE_REGION = "US"  # national numbers without +country code are read as this region's

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])")
# RFC 2606 / RFC 6761 names reserved for documentation and tests: placeholders, not anybody's address.
RESERVED_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|[^.]+\.(?:example|test|invalid|localhost))$", re.I)
# "icon@2x.png": image names with a scale suffix look like addresses; no real TLD is a file extension.
FILE_EXTENSIONS = re.compile(r"\.(?:png|jpe?g|gif|svg|webp|pdf|bmp|ico|tiff?)$", re.I)

# 13-19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")

# No valid phone number has fewer than 7 digits (separators and brackets may sit between them).
MAY_HOLD_PHONE = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,}")
# Words that make a bare number an identifier rather than a phone number ("Order #4155552671").
IDENTIFIER_CONTEXT = re.compile(
    r"(?:order|invoice|ref(?:erence)?|tracking|account|acct|id|sku|ticket|case|serial|item|no\.?|number|#)\s*[:#]?\s*$",
    re.I,
)


def _card_issuer(digits: str) -> str | None:
    """The card network whose prefix and length the number fits (ISO/IEC 7812 issuer ranges)."""
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "Visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "Mastercard"
    if two in (34, 37) and n == 15:
        return "American Express"
    if (digits.startswith("6011") or digits.startswith("65") or 644 <= int(digits[:3]) <= 649) and 16 <= n <= 19:
        return "Discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "JCB"
    if (two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305) and 14 <= n <= 19:
        return "Diners Club"
    if two == 62 and 16 <= n <= 19:
        return "UnionPay"
    return None


# Cheap necessary conditions, checked before patterns that walk every character of a (possibly 10 MB) string.
MAY_HOLD_CARD = re.compile(r"\d[ -]?\d")
SEVEN_DIGITS = re.compile(r"\d(?:\D*\d){6}")  # linear: \D* cannot take the digit that ends it


def _has_digits(text: str) -> bool:
    """False only if `text` holds no digit; on ASCII text that is ten memchr scans instead of a regex walk."""
    return not text.isascii() or any(digit in text for digit in "0123456789")


def find_emails(text: str) -> Iterator[Match]:
    if "@" not in text:
        return
    for m in EMAIL.finditer(text):
        domain = m.group().rsplit("@", 1)[1]
        if not RESERVED_DOMAINS.search(domain) and not FILE_EXTENSIONS.search(domain):
            yield Match("email", "personal_data/email", m.start(), m.end())


def find_phones(text: str, region: str = DEFAULT_PHONE_REGION) -> Iterator[Match]:
    if not _has_digits(text) or not MAY_HOLD_PHONE.search(text):
        return  # the matcher costs ~1 ms per string with digits; most strings have no 7-digit run
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        raw = m.raw_string
        unformatted = raw.isdigit()
        if unformatted and IDENTIFIER_CONTEXT.search(text[max(0, m.start - 25) : m.start]):
            continue  # "order #4155552671": a number that happens to fit a numbering plan
        region_code = phonenumbers.region_code_for_number(m.number) or "?"
        yield Match("phone", "personal_data/phone", m.start, m.end, note=f"valid {region_code} number")


def find_cards(text: str) -> Iterator[Match]:
    if not _has_digits(text) or not MAY_HOLD_CARD.search(text):
        return
    for m in CARD.finditer(text):
        raw = m.group()
        if " " in raw and "-" in raw:
            continue  # mixed separators: not how card numbers are written
        digits = re.sub(r"\D", "", raw)
        issuer = _card_issuer(digits)
        if issuer and luhn.is_valid(digits):
            yield Match("payment_card", "personal_data/payment_card", m.start(), m.end(), note=issuer)


def find_ibans(text: str) -> Iterator[Match]:
    if not _has_digits(text):
        return
    for m in IBAN.finditer(text):
        # The pattern may run into a following word; shrink from the right until the checksum holds.
        candidate = m.group()
        while len(candidate.replace(" ", "")) >= 15:
            if iban.is_valid(candidate):
                yield Match("iban", "personal_data/iban", m.start(), m.start() + len(candidate), note=candidate[:2])
                break
            candidate = candidate[:-1].rstrip()


# (kind, pattern, validator, required context before the match or None)
NationalRule = tuple[str, re.Pattern[str], Callable[[str], bool], re.Pattern[str] | None]
NATIONAL_IDS: list[NationalRule] = [
    # US SSN: no check digit; stdnum rejects impossible areas (000, 666, 9xx), group 00, serial 0000 and
    # numbers published in advertising. Only the dashed form: bare 9-digit numbers are far too common.
    ("US SSN", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), ssn.is_valid, None),
    ("ES DNI", re.compile(r"\b\d{8}-?[A-Z]\b"), dni.is_valid, None),  # check letter: number mod 23
    ("ES NIE", re.compile(r"\b[XYZ]-?\d{7}-?[A-Z]\b"), nie.is_valid, None),
    ("IT codice fiscale", re.compile(r"\b[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]\b"), codicefiscale.is_valid, None),
    (  # French social security number (NIR): 13 digits and a mod-97 key
        "FR NIR",
        re.compile(r"(?<!\d)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)"),
        nir.is_valid,
        None,
    ),
    (  # UK NHS number: mod-11 check digit; written 3-3-4 like a US phone number, so "NHS" must be near
        "UK NHS number",
        re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)"),
        nhs.is_valid,
        re.compile(r"\bNHS\b", re.I),
    ),
]


def find_national_ids(text: str) -> Iterator[Match]:
    if not _has_digits(text) or not SEVEN_DIGITS.search(text):
        return  # every identifier above holds at least 7 digits
    for kind, pattern, is_valid, context in NATIONAL_IDS:
        for m in pattern.finditer(text):
            if context is not None and not context.search(text[max(0, m.start() - 40) : m.start()]):
                continue
            if is_valid(m.group()):
                yield Match("national_id", "personal_data/national_id", m.start(), m.end(), note=kind)


PERSONAL_DETECTORS = (find_cards, find_ibans, find_national_ids, find_emails, find_phones)
