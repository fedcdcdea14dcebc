"""``edge-fleet publish --shadow DURATION|N --gate EXPR``: the signed shadow terms. Pure.

``--shadow 200`` judges the gate once 200 requests were compared; ``--shadow 30s`` /
``10m`` / ``2h`` at the end of that time (over at least one request). The gate is parsed
and normalized here (:mod:`edge_agent.shadow.gate`), and parsed again by every device.
Raises BadInputError (GateError) with a one-line message naming the token.
"""

from __future__ import annotations

import re

from edge_agent.errors import BadInputError
from edge_agent.shadow.gate import parse_gate
from edge_agent.update.wire import MAX_SHADOW_DURATION_S, MAX_SHADOW_REQUESTS, ShadowTerms

DEFAULT_GATE = "agreement>=0.98,p99_ms<=1.2x,errors==0"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def shadow_terms(shadow: str | None, gate: str | None) -> ShadowTerms | None:
    if shadow is None:
        if gate is not None:
            raise BadInputError("--gate needs --shadow DURATION|N")
        return None
    g = parse_gate(DEFAULT_GATE if gate is None else gate).text()
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)([smh]?)\s*", shadow)
    if m is None:
        raise BadInputError(f"--shadow {shadow!r}: expected a request count (200) or a "
                            "duration (30s, 10m, 2h)")
    num, unit = m.groups()
    if not unit:
        if "." in num or not 1 <= int(num) <= MAX_SHADOW_REQUESTS:
            raise BadInputError(f"--shadow {shadow!r}: a request count must be an integer "
                                f"from 1 to {MAX_SHADOW_REQUESTS} (what a device accepts)")
        return ShadowTerms(g, int(num))
    secs = float(num) * _UNITS[unit]
    if not 0 < secs <= MAX_SHADOW_DURATION_S:
        raise BadInputError(f"--shadow {shadow!r}: a duration must be within 7 days")
    return ShadowTerms(g, 0, secs)
