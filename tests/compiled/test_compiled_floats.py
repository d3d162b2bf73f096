"""The compiled reads' Float printer (backend/compiled/compiler.py `_float`) against orjson,
which prints the resolvers' floats: over a few hundred thousand doubles (any bit pattern,
integral, huge, tiny, subnormal, negative, zeros, powers of ten and their neighbours, and the
1e15..1e17 and 1e-4..1e-7 boundaries where the notations switch), every value the printer
does not refuse prints byte for byte as orjson prints it, and every value it refuses is one
whose shortest digits PostgreSQL does not print (or NaN, or an infinity)."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import orjson
import pytest

from backend.compiled.compiler import _float, float_refused
from backend.db import Database

pytestmark = pytest.mark.postgres

ROWS = "FROM unnest($1::float8[]) WITH ORDINALITY u(v, n)"


def _doubles(count: int = 300_000, seed: int = 7) -> list[float]:
    r = random.Random(seed)
    values = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308]
    values += [1.7976931348623157e308, 0.1, 0.30000000000000004, 1.0, 2.0**53, 2.0**63]
    for e in range(-324, 309):
        v = float(f"1e{e}")
        for near in (v, math.nextafter(v, 0), math.nextafter(v, math.inf)):
            values += [near * k for k in (1, 2, 5, 9.5) if math.isfinite(near * k)]
    for edge in (1e15, 1e16, 1e17, 1e-4, 1e-5, 1e-6, 1e-7, 2.0**53, 1e21, 1e22):
        for direction in (0, math.inf):
            v = edge
            for _ in range(200):
                values.append(v)
                v = math.nextafter(v, direction)
        for _ in range(2000):
            v = edge * r.uniform(0.5, 20)
            values += [v, round(v, r.randint(0, 20)), float(round(v))]
    while len(values) < count:
        kind = r.randrange(6)
        if kind == 0:  # any bit pattern (subnormals and the largest exponents included)
            v = struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind == 1:  # integral
            v = float(r.randint(1, 10 ** r.randint(1, 22)))
        elif kind == 2:  # subnormal
            v = struct.unpack("<d", r.getrandbits(52).to_bytes(8, "little"))[0]
        elif kind == 3:  # few digits, any exponent
            v = float(f"{r.randint(1, 99999)}e{r.randint(-330, 310)}")
        elif kind == 4:  # measurements
            v = round(r.uniform(0, 1000), r.randint(0, 6))
        else:
            v = r.uniform(0, 1) * 10.0 ** r.randint(-20, 25)
        if math.isfinite(v):
            values.append(v)
    return [v * sign for v in values for sign in (1.0, -1.0)]


async def _fetch(db: Database, sql: str, *args: Any) -> Any:
    async with db.read_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        return await driver.fetchval(sql, *args)


async def test_floats_print_as_orjson(db: Database) -> None:
    values = _doubles()
    refused = await _fetch(db, f"SELECT array_agg({float_refused('v')} ORDER BY n) {ROWS}", values)
    printed = [v for v, no in zip(values, refused, strict=True) if not no]
    others = [v for v, no in zip(values, refused, strict=True) if no]
    got = await _fetch(
        db, f"SELECT array_to_json(array_agg({_float('v')} ORDER BY n))::text {ROWS}", printed
    )
    if got != orjson.dumps(printed).decode():
        wrong = [
            (v, text)
            for v, text in zip(printed, got[1:-1].split(","), strict=True)
            if text != orjson.dumps(v).decode()
        ]
        pytest.fail(f"{len(wrong)} floats print differently, e.g. {wrong[:10]}")
    # Refused: PostgreSQL's digits are longer than the shortest (Python's repr) -- a rounding
    # boundary -- and only from 2**53 on; a few, not a whole range.
    texts = await _fetch(db, f"SELECT array_agg(v::text ORDER BY n) {ROWS}", others)
    for v, text in zip(others, texts, strict=True):
        assert abs(v) >= 2.0**53, (v, text)
        assert _digits(text) > _digits(repr(v)), (v, text)
    assert len(others) < len(values) // 100


def _digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0]
    return len(mantissa.replace(".", "").strip("0"))


async def test_unprintable_floats_fail_the_statement(db: Database) -> None:
    """NaN, the infinities, a rounding boundary, and any value when PostgreSQL would print
    fewer digits: the statement fails (the resolvers then answer); null prints null."""
    assert await _fetch(db, f"SELECT ({_float('$1::float8')})::text", None) is None
    for value in (math.nan, math.inf, -math.inf, 9.5e21, -1e23):
        with pytest.raises(Exception, match="no exact Float for"):
            await _fetch(db, f"SELECT ({_float('$1::float8')})::text", value)
    async with db.read_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        assert await driver.fetchval(f"SELECT ({_float('$1::float8')})::text", 0.1) == "0.1"
        await driver.execute("SET extra_float_digits = 0")
        try:
            with pytest.raises(Exception, match=r"no exact Float for 0\.1"):
                await driver.fetchval(f"SELECT ({_float('$1::float8')})::text", 0.1)
        finally:
            await driver.execute("RESET extra_float_digits")
