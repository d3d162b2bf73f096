"""Reading scanned codes: plain lot numbers and GS1 in every form a scanner or a person sends."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal

import pytest

from backend.lots.barcode import GS, MAX_CODE_LENGTH, BarcodeError, ParsedCode, parse_code

GTIN = "09501101530010"  # check digit 0
EAN13 = "5901234123457"  # a GTIN-13 as printed on an item
UTC = dt.UTC


def end_of(year: int, month: int, day: int) -> dt.datetime:
    """The first instant after the given expiry date: the lot is usable through that day."""
    return dt.datetime(year, month, day, tzinfo=UTC) + dt.timedelta(days=1)


# ---------------------------------------------------------------- plain lot numbers


@pytest.mark.parametrize(
    "code",
    [
        "LOT-2026-001",
        "L2026-0001",
        "LOT 42",
        "Charge-Ä7",
        # Look like element strings, but nothing marks them as GS1: they stay lot numbers.
        "10ABC",  # would be AI 10 "ABC"
        "17261231",  # would be AI 17, a valid date
        "2024-05-01",
        "21000123",  # would be AI 21 serial
        "3712",  # would be AI 37 count
        EAN13,  # an EAN-13 read without symbology identifier
        "0109501101530017",  # 01 + a GTIN with a wrong check digit
        "(A)123",  # parentheses without an AI
        "]x123",  # "]" + a character that is no symbology identifier
    ],
)
def test_plain_lot_number_is_the_whole_code(code: str) -> None:
    parsed = parse_code(code)
    assert parsed == ParsedCode(
        raw=code,
        gtin=None,
        lot_number=code,
        expires_at=None,
        serial=None,
        quantity=None,
        is_gs1=False,
    )


@pytest.mark.parametrize("raw", ["LOT-7\r\n", "LOT-7\n", "LOT-7\r", "LOT-7\t", "  LOT-7 \r\n"])
def test_wedge_suffix_and_spaces_are_trimmed_but_raw_is_kept(raw: str) -> None:
    parsed = parse_code(raw)
    assert parsed.lot_number == "LOT-7"
    assert parsed.raw == raw
    assert not parsed.is_gs1


def test_same_digits_are_a_lot_number_or_ai_10_depending_on_the_gs1_marker() -> None:
    assert parse_code("10ABC").lot_number == "10ABC"
    assert parse_code("]C110ABC").lot_number == "ABC"
    assert parse_code("(10)ABC").lot_number == "ABC"
    assert parse_code(f"10ABC{GS}").lot_number == "ABC"
    assert parse_code("10ABC~", gs_stand_ins="~").lot_number == "ABC"


@pytest.mark.parametrize(
    ("code", "lot"), [("]C0LOT-1", "LOT-1"), ("]C010ABC", "10ABC"), ("]C0 LOT-1 ", "LOT-1")]
)
def test_non_gs1_symbology_identifier_is_removed_and_the_rest_is_a_lot_number(
    code: str, lot: str
) -> None:
    parsed = parse_code(code)
    assert (parsed.lot_number, parsed.is_gs1, parsed.gtin) == (lot, False, None)


def test_plain_qr_and_datamatrix_identifiers_give_lot_numbers() -> None:
    assert parse_code("]Q1L2026-0001").lot_number == "L2026-0001"
    assert parse_code("]d1L2026-0001").lot_number == "L2026-0001"


# ---------------------------------------------------------------- GS1 forms


def test_parentheses() -> None:
    parsed = parse_code(f"(01){GTIN}(17)261231(10)ABC")
    assert parsed == ParsedCode(
        raw=f"(01){GTIN}(17)261231(10)ABC",
        gtin=GTIN,
        lot_number="ABC",
        expires_at=end_of(2026, 12, 31),
        serial=None,
        quantity=None,
        is_gs1=True,
    )


def test_parentheses_typed_with_spaces() -> None:
    parsed = parse_code(f"(01) {GTIN} (10) ABC (21) S-1")
    assert (parsed.gtin, parsed.lot_number, parsed.serial) == (GTIN, "ABC", "S-1")


def test_raw_element_strings_with_gs_between_variable_fields() -> None:
    parsed = parse_code(f"01{GTIN}10ABC{GS}21SN-9{GS}17261231")
    assert (parsed.gtin, parsed.lot_number, parsed.serial, parsed.expires_at) == (
        GTIN,
        "ABC",
        "SN-9",
        end_of(2026, 12, 31),
    )
    assert parsed.is_gs1


def test_gs1_datamatrix_with_symbology_identifier_and_raw_gs() -> None:
    # What a scanner with AIM identifiers sends for a GS1 DataMatrix (notes/pwa-offline.md 5.3).
    raw = f"]d2010950600013435210LOT-A17{GS}17271231"
    parsed = parse_code(raw)
    assert parsed == ParsedCode(
        raw=raw,
        gtin="09506000134352",
        lot_number="LOT-A17",
        expires_at=end_of(2027, 12, 31),
        serial=None,
        quantity=None,
        is_gs1=True,
    )


def test_gs1_128_with_symbology_identifier() -> None:
    parsed = parse_code(f"]C101{GTIN}1726063010B-77{GS}21S1")
    assert (parsed.gtin, parsed.lot_number, parsed.serial, parsed.expires_at) == (
        GTIN,
        "B-77",
        "S1",
        end_of(2026, 6, 30),
    )


def test_gs1_qr_with_symbology_identifier() -> None:
    parsed = parse_code(f"]Q301{GTIN}10Q-1{GS}3712")
    assert (parsed.gtin, parsed.lot_number, parsed.quantity) == (GTIN, "Q-1", Decimal(12))


def test_gs1_databar_with_symbology_identifier() -> None:
    parsed = parse_code(f"]e001{GTIN}1726020010DB-1")
    assert (parsed.gtin, parsed.lot_number, parsed.expires_at) == (
        GTIN,
        "DB-1",
        end_of(2026, 2, 28),
    )


def test_gs1_symbology_identifier_followed_by_parentheses() -> None:
    assert parse_code(f"]C1(01){GTIN}(10)P-1").lot_number == "P-1"


def test_camera_scan_without_identifier_is_gs1_when_it_holds_a_valid_gtin() -> None:
    # The browser's BarcodeDetector reports no symbology identifier.
    parsed = parse_code(f"01{GTIN}1726123110ABC")
    assert (parsed.gtin, parsed.lot_number, parsed.expires_at, parsed.is_gs1) == (
        GTIN,
        "ABC",
        end_of(2026, 12, 31),
        True,
    )
    # The GTIN need not come first.
    assert parse_code(f"1726123101{GTIN}10ABC").lot_number == "ABC"


def test_gtin_13_as_ai_01_padded_with_a_zero() -> None:
    assert parse_code(f"(01)0{EAN13}(10)L1").gtin == "0" + EAN13
    assert parse_code(f"010{EAN13}10L1").gtin == "0" + EAN13
    assert parse_code(f"]d2010{EAN13}10L1").gtin == "0" + EAN13


def test_ean_and_itf_identifiers_carry_a_bare_gtin() -> None:
    ean13 = parse_code(f"]E0{EAN13}")
    assert (ean13.gtin, ean13.lot_number, ean13.is_gs1) == ("0" + EAN13, None, True)
    assert parse_code("]E496385074").gtin == "00000096385074"  # EAN-8
    assert parse_code(f"]I1{GTIN}").gtin == GTIN  # ITF-14


def test_gs1_code_without_lot_gives_no_lot_number() -> None:
    parsed = parse_code(f"]d201{GTIN}")
    assert (parsed.gtin, parsed.lot_number) == (GTIN, None)


@pytest.mark.parametrize(
    "code",
    [
        f"https://id.gs1.org/01/{GTIN}/10/ABC?17=261231",
        f"]Q1https://id.gs1.org/01/{GTIN}/10/ABC?17=261231",
        f"]Q3HTTPS://example.com/01/{GTIN}/10/ABC?17=261231",
    ],
)
def test_gs1_digital_link(code: str) -> None:
    parsed = parse_code(code)
    assert (parsed.gtin, parsed.lot_number, parsed.expires_at, parsed.is_gs1) == (
        GTIN,
        "ABC",
        end_of(2026, 12, 31),
        True,
    )


# ---------------------------------------------------------------- keyboard wedges


@pytest.mark.parametrize(("stand_ins", "sep"), [("~", "~"), ("|", "|"), ("~|", "|"), ("§", "§")])
def test_gs_stand_in(stand_ins: str, sep: str) -> None:
    raw = f"]d201{GTIN}10ABC{sep}17261231{sep}21S-2"
    parsed = parse_code(raw, gs_stand_ins=stand_ins)
    assert (parsed.lot_number, parsed.expires_at, parsed.serial) == (
        "ABC",
        end_of(2026, 12, 31),
        "S-2",
    )
    assert parsed.raw == raw


def test_stand_in_is_not_a_separator_unless_configured() -> None:
    # Without the stand-in, "~" is data, and "~" is not in the GS1 character set.
    with pytest.raises(BarcodeError, match=r"no known application identifier at '~17261231'"):
        parse_code(f"]d201{GTIN}10ABC~17261231")


def test_stand_in_always_means_gs_even_in_a_plain_lot_number() -> None:
    assert parse_code("LOT~1").lot_number == "LOT~1"
    with pytest.raises(BarcodeError, match="no known application identifier at 'LOT<GS>1'"):
        parse_code("LOT~1", gs_stand_ins="~")


@pytest.mark.parametrize("stand_in", ["-", "A", "7", " ", "(", ")", ".", "/", "_", "]", "\x07"])
def test_stand_in_that_can_occur_in_codes_is_refused(stand_in: str) -> None:
    with pytest.raises(ValueError, match="cannot stand in for GS") as caught:
        parse_code("LOT-1", gs_stand_ins=stand_in)
    assert not isinstance(caught.value, BarcodeError)


@pytest.mark.parametrize("suffix", ["\r\n", "\n", "\r", "\t"])
def test_wedge_suffix_after_a_gs1_code(suffix: str) -> None:
    parsed = parse_code(f"]d201{GTIN}10ABC{GS}17261231{suffix}")
    assert (parsed.lot_number, parsed.expires_at) == ("ABC", end_of(2026, 12, 31))
    assert parse_code(f"(01){GTIN}(10)XYZ{suffix}").lot_number == "XYZ"


def test_leading_gs_sent_for_fnc1_in_first_position() -> None:
    parsed = parse_code(f"{GS}01{GTIN}10ABC")
    assert (parsed.gtin, parsed.lot_number) == (GTIN, "ABC")


# ---------------------------------------------------------------- expiry dates


@pytest.mark.parametrize(
    ("yymmdd", "last_usable_day"),
    [
        ("261231", dt.date(2026, 12, 31)),
        ("260200", dt.date(2026, 2, 28)),  # day 00: last day of the month
        ("240200", dt.date(2024, 2, 29)),  # ... in a leap year
        ("241100", dt.date(2024, 11, 30)),
        ("271200", dt.date(2027, 12, 31)),
    ],
)
def test_expiry_is_the_start_of_the_day_after_in_utc(yymmdd: str, last_usable_day: dt.date) -> None:
    parsed = parse_code(f"(01){GTIN}(17){yymmdd}(10)X")
    assert parsed.expires_at == end_of(
        last_usable_day.year, last_usable_day.month, last_usable_day.day
    )
    assert parsed.expires_at is not None
    assert parsed.expires_at.utcoffset() == dt.timedelta(0)
    assert parsed.expires_at.time() == dt.time(0, 0)


# ---------------------------------------------------------------- quantities


def test_count_of_units_and_variable_count_are_quantities() -> None:
    assert parse_code(f"]C102{GTIN}3748{GS}10P-9").quantity == Decimal(48)
    assert parse_code(f"]C101{GTIN}3000025{GS}10P-9").quantity == Decimal(25)
    assert parse_code(f"(01){GTIN}(30)7(37)7").quantity == Decimal(7)


def test_ai_02_gtin_of_contents_is_the_gtin() -> None:
    parsed = parse_code(f"(00)095011015300000017(02){GTIN}(37)48(10)P-9")
    assert (parsed.gtin, parsed.quantity, parsed.lot_number) == (GTIN, Decimal(48), "P-9")


def test_net_weight_is_not_a_quantity_but_is_reported() -> None:
    parsed = parse_code(f"(01){GTIN}(3103)001250(10)W-1")
    assert parsed.quantity is None
    assert parsed.net_weight_kg == Decimal("1.250")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # Wrong GTIN check digit, in every form that says "GS1"
        (
            f"]d201{GTIN[:-1]}7{GS}10A",
            "GTIN check digit is wrong: expected 0, got 7 (GTIN 09501101530017).",
        ),
        (f"(01){GTIN[:-1]}7(10)A", "GTIN check digit is wrong: expected 0, got 7"),
        (f"01{GTIN[:-1]}7{GS}10A", "GTIN check digit is wrong: expected 0, got 7"),
        ("]E05901234123458", "GTIN check digit is wrong: expected 7, got 8"),
        (
            f"https://id.gs1.org/01/{GTIN[:-1]}7/10/A",
            "GTIN check digit is wrong: expected 0, got 7",
        ),
        # Impossible dates
        (f"(01){GTIN}(17)261301", "The (17) expiry date '261301' is not a valid date"),
        (f"]d201{GTIN}17261301", "The (17) expiry date '261301' is not a valid date"),
        (f"]d201{GTIN}17260230", "The (17) expiry date '260230' is not a valid date"),
        (f"]d201{GTIN}17260015", "The (17) expiry date '260015' is not a valid date"),
        # Unknown AIs
        (f"(01){GTIN}(23)1", "(23) is not a GS1 application identifier."),
        (
            f"]C101{GTIN}2312",
            f"The GS1 code has no known application identifier at '2312' after (01){GTIN}.",
        ),
        ("]d2hello", "The GS1 code has no known application identifier at 'hello'."),
        # Cut off or overlong data
        ("]d20109501", "The (01) GTIN must be 14 digits, got '09501'."),
        (f"]d201{GTIN}1726", "The (17) expiry date '26' is cut off: GS1 dates have 6 digits"),
        (f"(01){GTIN}(10)", "The (10) lot number in the code is empty."),
        ("]d230", "The (30) quantity in the code is empty."),
        ("(17)2612310", "The (17) expiry date '2612310' is too long: only '261231' fits"),
        ("(10)" + "A" * 21, "only 'AAAAAAAAAAAAAAAAAAAA' fits the GS1 format N2+X..20"),
        (
            f"]C101{GTIN}10{'A' * 25}",
            "A lot or serial number has at most 20 characters; if the scanner cannot send "
            "GS after it, configure a GS stand-in character.",
        ),
        # A valid leading GTIN without marker: a damaged GS1 code, not a lot number
        (f"01{GTIN}ABC", f"no known application identifier at 'ABC' after (01){GTIN}."),
        (f"(01){GTIN}(1O)ABC", "Part of the GS1 code is not an (AI)data pair: '(1O)ABC'."),
        # Contradictions and zeros
        (f"10A{GS}10B", "The code holds more than one lot number: (10)A, (10)B."),
        (f"(01){GTIN}(30)5(37)6", "The code holds more than one quantity: (30)5, (37)6."),
        ("]d2370", "The count in the code, (37)0, is zero: enter the quantity by hand."),
        (f"(01){GTIN}(3102)000000", "The net weight in the code, (3102)000000, is zero"),
        # Other GS1 misfits
        ("(10)ÄB", "GS1 codes hold only ASCII characters, but this one contains 'Ä'."),
        ("]E0ABC", "The scanner reports a product barcode (]E0) but 'ABC' is not a GTIN"),
        ("https://example.com/lot/42", "This web address is not a GS1 Digital Link"),
        ("]C0A\x1dB", "The scanner reports a non-GS1 barcode (]C0) that contains a GS separator"),
        ("]d2", "Nothing follows the symbology identifier ]d2"),
        ("]C0\r\n", "Nothing follows the symbology identifier ]C0"),
        (GS, "The code holds no GS1 data, only separators"),
        # Input hygiene
        ("", "Nothing was scanned: the code is empty."),
        ("  \r\n", "Nothing was scanned: the code is empty."),
        ("LOT\x07-1", "The code contains the control character U+0007 at position 4"),
        ("LOT-1\x7f", "control character U+007F at position 6"),
        ("LOT\u200b-1", "control character U+200B"),
        ("\x1cLOT-1", "control character U+001C at position 1"),
        ("LOT-1\r\nLOT-2", "The code contains a line break or tab inside it"),
        ("LOT\t1", "The code contains a line break or tab inside it"),
    ],
)
def test_unreadable_code_says_what_is_wrong(code: str, message: str) -> None:
    with pytest.raises(BarcodeError, match=re.escape(message)):
        parse_code(code)


def test_code_length_limit() -> None:
    assert parse_code("L" * MAX_CODE_LENGTH).lot_number == "L" * MAX_CODE_LENGTH
    with pytest.raises(
        BarcodeError,
        match=re.escape("The code is 513 characters long; at most 512 are accepted."),
    ):
        parse_code("L" * (MAX_CODE_LENGTH + 1))


def test_barcode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_code("")


def test_parsed_code_is_immutable() -> None:
    parsed = parse_code("LOT-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.lot_number = "LOT-2"  # type: ignore[misc]
