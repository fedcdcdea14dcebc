"""Client JSON parses to the same value with and without the optional orjson (issue 17
part 3): ``edge_agent.untrusted_json.loads`` with orjson and with the standard library
return equal values of equal types (NaN included) or raise the same InvalidRequestError,
over the inputs where the two parsers differ. Runs where orjson is installed
(``pip install edge-agent[fast]``); tests/agent/test_tfs_conformance.py is run both ways
(``EDGE_AGENT_JSON=stdlib`` turns orjson off)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edge_agent import untrusted_json
from edge_agent.errors import InvalidRequestError

pytest.importorskip("orjson")

CORPUS: list[bytes] = [
    b'{"instances": [[1.0, -3.14, NaN, Infinity, -Infinity]]}',  # TF Serving's tokens
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
    b"1e400", b"-1e400", b"[1.7976931348623157e308, 5e-324, 2.2250738585072014e-308]",
    b"123456789012345678901234567890",  # beyond 64 bits: orjson would make it a float
    b"[18446744073709551615, 18446744073709551616, -9223372036854775809]",
    b"[0.1234567890123456789012]",  # 22 digits in a row (a float, sent to json)
    b'"\\ud800"', b'"\\ud83d\\ude00"', b'{"\\u0000": 1}',  # surrogates, NUL
    b"\xef\xbb\xbf{}",  # a BOM
    "{}".encode("utf-16"),  # UTF-16 (json detects it)
    b"-0", b"-0.0", b"0e0", b" [1] ", b"[1,]", b"[01]", b"{'a': 1}", b"tru", b"",
    b"[" * 2000 + b"]" * 2000,  # deep nesting
    b"1" * 5000,  # the int-digits limit
    b'{"x": "\xff"}',  # not UTF-8
    b'{"instances": [' + b", ".join(b"%r" % (i / 7) for i in range(10_000)) + b"]}",
]


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _parse(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", untrusted_json.loads(data)
    except InvalidRequestError as e:
        return "error", str(e)


@pytest.mark.parametrize("data", CORPUS, ids=lambda d: repr(d[:30]))
def test_orjson_and_the_standard_library_give_the_same_value_or_error(
        data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert untrusted_json.BACKEND == "orjson"
    fast = _parse(data)
    monkeypatch.setattr(untrusted_json, "_orjson", None)
    slow = _parse(data)
    assert fast[0] == slow[0] and _same(fast[1], slow[1]), (fast, slow)
