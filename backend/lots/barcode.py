"""Reading what a scanner sent: a plain lot number, or GS1 element strings.

All GS1 work (symbology identifiers, the AI table, field formats, check digits,
dates and centuries, Digital Link URIs) is done by `biip`; this module decides
*whether* a code is GS1 and turns biip's findings into a `ParsedCode` or into a
`BarcodeError` whose message an operator can act on.

What is accepted
----------------
- GS1 with parentheses, as printed under a barcode or typed by hand; spaces
  are ignored: ``(01)09501101530010(17)261231(10)ABC``.
- Raw element strings as a scanner sends them, GS (0x1D) after variable-length
  fields: ``0109501101530010 10ABC <GS> 17261231`` (without the spaces).
- Either, led by an AIM symbology identifier biip knows: ``]d2`` GS1 DataMatrix,
  ``]C1`` GS1-128, ``]Q3`` GS1 QR, ``]e0`` GS1 DataBar, ``]J1`` GS1 DotCode;
  ``]E0``/``]E4``/``]I1`` (EAN-13/UPC, EAN-8, ITF-14) carry a bare GTIN.
  Any other identifier (``]C0`` plain Code 128, ``]d1``, ``]Q1``, ``]A0`` …)
  says "not GS1": it is removed and the rest is a plain lot number.
- A GS1 Digital Link URI (``https://id.gs1.org/01/…/10/…``), the usual content
  of a plain QR code. Any other web address is refused.
- Anything else is a plain lot number, trimmed.

Keyboard wedges: spaces, CR, LF and TAB at either end are trimmed (scanners add
ENTER or TAB as a suffix). Most wedges cannot type GS; configure the scanner to
send a stand-in character instead and pass it as ``gs_stand_ins`` (setting
``MES_GS_STAND_INS``, e.g. ``"~"`` or ``"|"``; several characters allowed, each
one a stand-in). A stand-in always means GS, so it must be a character that
never occurs in GS1 data nor in the plant's lot numbers: letters, digits,
whitespace, ``]`` and everything in the GS1 data character set (which includes
``- . / ( ) _``) are refused with a ``ValueError``. Only single characters are
stand-ins: multi-character notations such as ``<GS>`` or caret ``^]`` are not
understood, because a scanner that can replace GS can replace it with one
character, and an always-on notation could collide with real lot numbers.
A lot number containing a configured stand-in cannot be scanned as a plain
code. A wedge that silently drops GS cannot be detected: ``01…10ABC17261231``
reads as lot ``ABC17261231`` (GS1 allows it), which then matches no lot.

Plain lot number or GS1? (the safe rule)
----------------------------------------
Reading a plain lot number as GS1 would look up a *different* lot (``10ABC``
would become lot ``ABC``), so a code is GS1 only when it says so:

1. it starts with a GS1 symbology identifier (``]C110ABC`` → lot ``ABC``);
2. or it starts with ``(`` + digits + ``)`` (``(10)ABC`` → lot ``ABC``);
3. or it contains GS (or a configured stand-in): ``10ABC<GS>21X`` is GS1;
4. or, with none of these, biip reads the *whole* code as element strings
   that include AI 01 with a correct check digit. This is how a camera, which
   reports no symbology identifier, delivers a GS1 DataMatrix:
   ``01095011015300101726123110ABC`` → GTIN, expiry, lot ``ABC``.
   When such a code starts with 01 + a 14-digit GTIN whose check digit is right
   but the rest cannot be read, it is a damaged GS1 code: ``BarcodeError``.

Everything else is a plain lot number, even when it looks like element strings:
``10ABC``, ``L2026-0001``, ``17261231``, ``2024-05-01``, ``5901234123457`` (an
EAN-13 read without identifier) and ``0109501101530017`` (01 + a wrong check
digit) all stay lot numbers; the lot lookup then fails with UNKNOWN_BARCODE
rather than picking a wrong lot. With a GS1 marker present, every error in
the GS1 data (unknown AI, wrong check digit, impossible date, cut-off field)
is a ``BarcodeError``.

What is read
------------
- ``gtin``: AI 01, or AI 02 (GTIN of the contents of a logistic unit, used
  with 37 on pallet labels); always 14 digits, check digit verified. A GTIN-13
  is ``01`` + ``0`` + its 13 digits.
- ``lot_number``: AI 10; for a plain code, the whole (trimmed) code.
- ``expires_at``: AI 17, YYMMDD, century by the GS1 sliding window (biip), day
  00 = the month's last day (biip). A lot is usable through its whole expiry
  date (UTC), so ``expires_at`` is the first instant after it: 00:00 UTC of the
  next day. ``261231`` → 2027-01-01T00:00Z; ``260200`` → 2026-03-01T00:00Z.
  A lot is past its expiry when ``scan time >= expires_at``.
- ``serial``: AI 21.
- ``quantity``: AI 30 (variable count) or 37 (count of units), as ``Decimal``;
  zero or empty is an error. AI 310n (net weight, kg) is NOT a quantity here,
  because the parser does not know the material's unit: it is given as
  ``net_weight_kg`` and the caller may use it for materials kept in kg.
- An AI given twice with different values is an error. Other AIs are read
  (and validated) but not reported.

Limits: at most 512 characters as received; control characters other than GS
(and CR/LF/TAB at the ends) are refused; GS1 data must be ASCII.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TypeVar

from biip import ParseConfig, ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin
from biip.symbology import GS1Symbology, SymbologyIdentifier

__all__ = ["GS", "MAX_CODE_LENGTH", "BarcodeError", "ParsedCode", "parse_code"]

MAX_CODE_LENGTH = 512
GS = "\x1d"

_CONFIG = ParseConfig(separator_chars=(GS,))
_WEDGE_TRIM = " \t\r\n"
_HRI_START = re.compile(r"\(\d{2,4}\)")
_URL_START = re.compile(r"https?://", re.IGNORECASE)
# 01 + a 14-digit GTIN at the start of a code without any other GS1 marker.
_LEADING_GTIN = re.compile(r"01(\d{14})", re.ASCII)
_HRI_PAIR = re.compile(r"\((\d*)\)([^(]*)")
_LABELS = {
    "00": "SSCC",
    "01": "GTIN",
    "02": "GTIN of the contents",
    "10": "lot number",
    "17": "expiry date",
    "21": "serial number",
    "30": "quantity",
    "37": "count",
}


@dataclass(frozen=True)
class ParsedCode:
    """What a scanned code says. See the module docstring for the rules."""

    raw: str
    """What was scanned, exactly as received."""
    gtin: str | None
    """14 digits (AI 01, or 02), check digit verified."""
    lot_number: str | None
    """AI 10, or the whole trimmed code when it is a plain lot number."""
    expires_at: dt.datetime | None
    """AI 17: the first instant (UTC) after the expiry date."""
    serial: str | None
    """AI 21."""
    quantity: Decimal | None
    """AI 30 or 37, a count > 0."""
    is_gs1: bool
    net_weight_kg: Decimal | None = None
    """AI 310n, kilograms; not turned into `quantity` (the unit is the material's)."""


class BarcodeError(ValueError):
    """The code cannot be read; the message says what is wrong and what to do."""


def parse_code(raw: str, *, gs_stand_ins: str = "") -> ParsedCode:
    """Read a scanned code: a plain lot number or GS1 element strings.

    ``gs_stand_ins``: characters the scanner types in place of GS (0x1D).
    Raises `BarcodeError` when the code cannot be read, and `ValueError` when
    ``gs_stand_ins`` holds a character that can occur in codes.

    >>> parse_code("(01)09501101530010(10)ABC").lot_number
    'ABC'
    >>> parse_code("10ABC").lot_number  # no GS1 marker: a plain lot number
    '10ABC'
    >>> parse_code("]C110ABC").lot_number
    'ABC'
    """
    table = _stand_in_table(gs_stand_ins)
    if len(raw) > MAX_CODE_LENGTH:
        raise BarcodeError(
            f"The code is {len(raw)} characters long; at most {MAX_CODE_LENGTH} are accepted. "
            "Scan one code at a time."
        )
    text = raw.strip(_WEDGE_TRIM)
    if not text:
        raise BarcodeError("Nothing was scanned: the code is empty.")
    _check_characters(text)
    text = text.translate(table)

    found = _classify(text)
    if isinstance(found, str):
        return ParsedCode(
            raw=raw,
            gtin=None,
            lot_number=found,
            expires_at=None,
            serial=None,
            quantity=None,
            is_gs1=False,
        )
    return _from_element_strings(raw, found)


# ---------------------------------------------------------------- telling GS1 from plain


def _classify(text: str) -> list[GS1ElementString] | str:
    """GS1 element strings, or the plain lot number (a `str`)."""
    symbology = _symbology_identifier(text)
    if symbology is not None:
        data = text[len(symbology) :]
        if not data.strip(" "):
            raise BarcodeError(
                f"Nothing follows the symbology identifier {symbology.value}: scan the code again."
            )
        kind = symbology.gs1_symbology
        if kind in GS1Symbology.with_gs1_messages():
            if data.startswith("("):
                return _parse_hri(data)
            if _URL_START.match(data) and kind in GS1Symbology.with_gs1_digital_link_uri():
                return _parse_digital_link(data)
            return _parse_element_strings(data)
        if kind in GS1Symbology.with_gtin():
            return [_parse_bare_gtin(data, symbology)]
        if _URL_START.match(data):
            return _parse_digital_link(data)
        if GS in data:
            raise BarcodeError(
                f"The scanner reports a non-GS1 barcode ({symbology.value}) that contains a GS "
                "separator: check the scanner's GS1 settings, or key in the lot number."
            )
        return data.strip(" ")

    if _HRI_START.match(text):
        return _parse_hri(text)
    if _URL_START.match(text):
        return _parse_digital_link(text)
    if GS in text:
        return _parse_element_strings(text)

    # No marker: GS1 only when biip reads the whole code and it holds a valid GTIN.
    if "01" in text and text.isascii():
        try:
            element_strings = GS1Message.parse(text, config=_CONFIG).element_strings
        except ParseError:
            pass
        else:
            if any(es.ai.ai == "01" and es.gtin is not None for es in element_strings):
                return list(element_strings)
    leading = _LEADING_GTIN.match(text)
    if leading and _gtin_check_digit_ok(leading.group(1)):
        return _parse_element_strings(text)  # raises: explains what is damaged
    return text


def _symbology_identifier(text: str) -> SymbologyIdentifier | None:
    if not text.startswith("]"):
        return None
    try:
        return SymbologyIdentifier.extract(text)
    except (ParseError, ValueError, IndexError):
        # "]" + a character no standard assigns: not an identifier, keep it as data.
        return None


def _gtin_check_digit_ok(digits: str) -> bool:
    return gs1_standard_check_digit(digits[:-1]) == int(digits[-1])


# ---------------------------------------------------------------- GS1 forms


def _parse_element_strings(data: str) -> list[GS1ElementString]:
    _require_ascii(data)
    try:
        return list(GS1Message.parse(data, config=_CONFIG).element_strings)
    except ParseError as exc:
        raise BarcodeError(_explain_element_strings(data, exc)) from exc


def _parse_hri(text: str) -> list[GS1ElementString]:
    _require_ascii(text)
    compact = "".join(text.split())
    try:
        message = GS1Message.parse_hri(compact, config=_CONFIG)
    except ParseError as exc:
        raise BarcodeError(_explain_hri(compact) or f"The GS1 code cannot be read: {exc}") from exc
    # biip skips what does not look like "(AI)data"; refuse to drop part of a code.
    rendered = message.as_hri()
    if rendered != compact:
        same = next(
            (i for i, (a, b) in enumerate(zip(rendered, compact, strict=False)) if a != b),
            len(rendered),
        )
        unread = compact[same:]
        raise BarcodeError(
            _explain_hri(compact)
            or f"Part of the GS1 code is not an (AI)data pair: {_show(unread[:30])}. "
            "Check the code and scan or type it again."
        )
    return list(message.element_strings)


def _parse_digital_link(url: str) -> list[GS1ElementString]:
    try:
        link = GS1DigitalLinkURI.parse(url, config=_CONFIG)
    except ParseError as exc:
        raise BarcodeError(
            f"This web address is not a GS1 Digital Link with a product or lot: {_show(url[:80])}. "
            "Scan the lot's label."
        ) from exc
    return list(link.element_strings)


def _parse_bare_gtin(data: str, symbology: SymbologyIdentifier) -> GS1ElementString:
    """An EAN/UPC or ITF-14 barcode: a GTIN and nothing else."""
    try:
        gtin = Gtin.parse(data, config=_CONFIG)
    except ParseError as exc:
        if data.isascii() and data.isdecimal() and len(data) in (8, 12, 13, 14):
            raise BarcodeError(_check_digit_message(data)) from exc
        raise BarcodeError(
            f"The scanner reports a product barcode ({symbology.value}) but {_show(data[:30])} is "
            "not a GTIN (8, 12, 13 or 14 digits)."
        ) from exc
    return GS1ElementString.parse("01" + gtin.as_gtin_14(), config=_CONFIG)


def _require_ascii(data: str) -> None:
    if not data.isascii():
        bad = next(ch for ch in data if not ch.isascii())
        raise BarcodeError(
            f"GS1 codes hold only ASCII characters, but this one contains {_show(bad)}. "
            "Scan the code again or key in the lot number."
        )


# ---------------------------------------------------------------- explaining failures


def _explain_element_strings(data: str, exc: ParseError) -> str:
    """Walk the element strings with biip to say which one is wrong and how."""
    rest = data
    read: list[str] = []
    last_ai = ""
    while rest:
        try:
            ai = GS1ApplicationIdentifier.extract(rest)
        except ParseError:
            where = f" after {''.join(read)}" if read else ""
            hint = ""
            if last_ai in ("10", "21"):
                hint = (
                    " A lot or serial number has at most 20 characters; if the scanner cannot "
                    "send GS after it, configure a GS stand-in character."
                )
            return (
                f"The GS1 code has no known application identifier at {_show(rest[:20])}{where}."
                + hint
            )
        try:
            element = GS1ElementString.extract(rest, config=_CONFIG)
        except ParseError:
            field = rest[len(ai) :].split(GS, 1)[0]
            return _element_problem(ai, field)
        read.append(element.as_hri())
        last_ai = ai.ai
        rest = rest[len(element) :].lstrip(GS)
    return f"The GS1 code cannot be read: {exc}"  # pragma: no cover - biip read it after all


def _explain_hri(compact: str) -> str | None:
    """What is wrong with the first bad (AI)data pair, if one is."""
    for number, field in _HRI_PAIR.findall(compact):
        ai = _known_ai(number)
        if ai is None:
            return (
                f"({number}) is not a GS1 application identifier. "
                "Check the code and scan or type it again."
            )
        try:
            GS1ElementString.parse(number + field, config=_CONFIG)
        except ParseError:
            pass
        else:
            continue
        try:
            head = GS1ElementString.extract(number + field, config=_CONFIG)
        except ParseError:
            return _element_problem(ai, field)
        return (
            f"The {_label(ai)} {_show(field[:30])} is too long: only {_show(head.value)} fits "
            f"the GS1 format {ai.format}. Check the code and scan or type it again."
        )
    return None


def _known_ai(number: str) -> GS1ApplicationIdentifier | None:
    try:
        ai = GS1ApplicationIdentifier.extract(number)
    except ParseError:
        return None
    return ai if ai.ai == number else None


def _show(data: str) -> str:
    """Code data quoted for a message, GS written as <GS>."""
    return "'" + data.replace(GS, "<GS>") + "'"


def _label(ai: GS1ApplicationIdentifier) -> str:
    return f"({ai.ai}) {_LABELS.get(ai.ai, ai.data_title)}"


def _element_problem(ai: GS1ApplicationIdentifier, field: str) -> str:
    label = _label(ai)
    if not field:
        return f"The {label} in the code is empty. Scan the code again."
    if "YYMMDD" in ai.description and len(field) < 6:
        return (
            f"The {label} {_show(field)} is cut off: GS1 dates have 6 digits (YYMMDD). "
            "Scan the code again."
        )
    if "YYMMDD" in ai.description:
        return (
            f"The {label} {_show(field[:6])} is not a valid date: GS1 dates are YYMMDD, "
            "with day 00 for the month's last day."
        )
    if ai.ai in ("01", "02"):
        return (
            f"The {label} must be 14 digits, got {_show(field[:14])}. "
            "The code may be cut off: scan it again."
        )
    return (
        f"The {label} {_show(field[:20])} does not fit the GS1 format {ai.format}. "
        "The code may be cut off or misread: scan it again."
    )


def _check_digit_message(gtin: str) -> str:
    expected = gs1_standard_check_digit(gtin[:-1])
    return (
        f"GTIN check digit is wrong: expected {expected}, got {gtin[-1]} (GTIN {gtin}). "
        "The label may be misprinted or misread: scan again or key in the lot number."
    )


# ---------------------------------------------------------------- building the result


def _from_element_strings(raw: str, elements: list[GS1ElementString]) -> ParsedCode:
    if not elements:
        raise BarcodeError("The code holds no GS1 data, only separators: scan it again.")
    for es in elements:
        if es.ai.ai in ("01", "02") and es.gtin is None:
            raise BarcodeError(_check_digit_message(es.value))

    gtin = _one(elements, ("01", "02"), "GTIN", lambda es: es.value)
    lot_number = _one(elements, ("10",), "lot number", lambda es: es.value)
    serial = _one(elements, ("21",), "serial number", lambda es: es.value)
    expiry = _one(elements, ("17",), "expiry date", _date_of)
    quantity = _one(elements, ("30", "37"), "quantity", _count_of)
    net_weight = _one(elements, tuple(f"310{n}" for n in range(10)), "net weight", _weight_of)

    expires_at = None
    if expiry is not None:
        # Usable through the whole expiry date: it ends at the start of the next day (UTC).
        expires_at = dt.datetime.combine(expiry + dt.timedelta(days=1), dt.time(), dt.UTC)
    return ParsedCode(
        raw=raw,
        gtin=gtin,
        lot_number=lot_number,
        expires_at=expires_at,
        serial=serial,
        quantity=quantity,
        is_gs1=True,
        net_weight_kg=net_weight,
    )


_V = TypeVar("_V", bound=Hashable)


def _one(
    elements: Iterable[GS1ElementString],
    ais: tuple[str, ...],
    label: str,
    value_of: Callable[[GS1ElementString], _V],
) -> _V | None:
    found = {es.as_hri(): value_of(es) for es in elements if es.ai.ai in ais}
    if len(set(found.values())) > 1:
        raise BarcodeError(
            f"The code holds more than one {label}: {', '.join(found)}. Scan the lot's own label."
        )
    return next(iter(found.values()), None)


def _date_of(es: GS1ElementString) -> dt.date:
    if es.date is None:  # pragma: no cover - biip verifies dates with our config
        raise BarcodeError(_element_problem(es.ai, es.value))
    return es.date


def _count_of(es: GS1ElementString) -> Decimal:
    if not es.value:
        raise BarcodeError(_element_problem(es.ai, es.value))
    count = Decimal(int(es.value))
    if count == 0:
        raise BarcodeError(
            f"The {_LABELS[es.ai.ai]} in the code, {es.as_hri()}, is zero: "
            "enter the quantity by hand."
        )
    return count


def _weight_of(es: GS1ElementString) -> Decimal:
    if es.decimal is None or es.decimal == 0:
        raise BarcodeError(
            f"The net weight in the code, {es.as_hri()}, is zero: enter the quantity by hand."
        )
    return es.decimal


# ---------------------------------------------------------------- input hygiene


def _check_characters(text: str) -> None:
    for position, ch in enumerate(text, start=1):
        if ch == GS:
            continue
        if ch in "\t\r\n":
            raise BarcodeError(
                "The code contains a line break or tab inside it, as if two scans ran "
                "together: scan one code at a time."
            )
        category = unicodedata.category(ch)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise BarcodeError(
                f"The code contains the control character U+{ord(ch):04X} at position "
                f"{position}: check the scanner's output settings and scan again."
            )


@lru_cache(maxsize=16)
def _stand_in_table(gs_stand_ins: str) -> dict[int, str]:
    """`str.translate` table turning each stand-in into GS; refuses unsafe stand-ins."""
    for ch in gs_stand_ins:
        if (
            not ch.isprintable()
            or ch.isspace()
            or ch.isalnum()
            or ch == "]"
            or _is_gs1_data_character(ch)
        ):
            raise ValueError(
                f"{ch!r} cannot stand in for GS: it can occur in GS1 data or lot numbers. "
                "Use a character such as | ~ ^ # or {."
            )
    return {ord(ch): GS for ch in gs_stand_ins}


def _is_gs1_data_character(ch: str) -> bool:
    """Whether `ch` can occur in a lot number, by biip's own rules for AI 10."""
    try:
        GS1ElementString.parse("10" + ch, config=_CONFIG)
    except ParseError:
        return False
    return True
