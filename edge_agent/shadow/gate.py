"""The shadow gate: parse, normalize and evaluate ``agreement>=0.98,p99_ms<=1.2x,errors==0``.

Pure: no IO, no clock. The publisher parses the gate before signing (a bad gate is a
one-line error naming the token), and the device parses the signed text again and
refuses the release if it does not parse — it never trusts the publisher's tool.

Grammar (whitespace ignored)::

    gate   := clause ("," clause)*
    clause := metric op number ["x"]
    metric := agreement | error | p50_ms | p99_ms | errors
    op     := >= | <= | == | > | <

``agreement``: fraction of compared samples on which the candidate agrees with the active
version (top-1 for a class head, else relative output error within
:data:`~edge_agent.shadow.stats.RAW_AGREE_REL`); ``error``: mean relative output error;
``p50_ms`` / ``p99_ms``: the candidate's latency percentiles; ``errors``: requests the
candidate failed. ``Nx`` (only for ``p50_ms`` / ``p99_ms``) is relative to the active
version's same figure over the same requests.

Raises :class:`GateError` (a :class:`~edge_agent.errors.BadInputError`).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.errors import BadInputError

__all__ = [
    "MAX_GATE_CHARS",
    "METRICS",
    "Clause",
    "Gate",
    "GateError",
    "GateVerdict",
    "parse_gate",
]

METRICS = ("agreement", "error", "p50_ms", "p99_ms", "errors")
RELATIVE_OK = ("p50_ms", "p99_ms")
MAX_GATE_CHARS = 512
MAX_CLAUSES = 16
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, ">": operator.gt, "<": operator.lt}
_CLAUSE = re.compile(r"^([a-z0-9_]+)(>=|<=|==|>|<)([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)(x?)$")


class GateError(BadInputError):
    """A gate expression that does not parse; the message names the token."""

    def __init__(self, message: str, *, token: str) -> None:
        self.token = token
        super().__init__(message)


@dataclass(frozen=True)
class Clause:
    metric: str
    op: str
    value: float
    relative: bool = False  # value is a multiple of the active version's same metric

    def text(self) -> str:
        return f"{self.metric}{self.op}{_number(self.value)}{'x' if self.relative else ''}"


@dataclass(frozen=True)
class GateVerdict:
    ok: bool
    reason: str  # the failing clauses with their figures, or all figures when it holds


@dataclass(frozen=True)
class Gate:
    clauses: tuple[Clause, ...]

    def text(self) -> str:
        """The normalized form (what is signed): no spaces, numbers exact (:func:`_number`),
        given order."""
        return ",".join(c.text() for c in self.clauses)

    def evaluate(self, candidate: dict[str, float], active: dict[str, float]) -> GateVerdict:
        """``candidate`` / ``active``: the metrics by name (see :mod:`stats`)."""
        failed, shown = [], []
        for c in self.clauses:
            got = candidate.get(c.metric, math.nan)
            bound = c.value * active.get(c.metric, math.nan) if c.relative else c.value
            ok = not math.isnan(got) and not math.isnan(bound) and _OPS[c.op](got, bound)
            what = f"{c.metric} {got:.4g} (gate {c.text()}" + (
                f" = {bound:.4g})" if c.relative else ")")
            shown.append(what)
            if not ok:
                failed.append(what)
        if failed:
            return GateVerdict(False, "; ".join(failed))
        return GateVerdict(True, "; ".join(shown))


def _number(v: float) -> str:
    """``%g`` when it is exact, else the shortest text that reads back as ``v``: the signed
    gate is the one that was typed (``%g`` alone made 0.9999999 into 1, and 1234567
    into ``1.23457e+06``)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(v)


def parse_gate(text: str) -> Gate:
    """Parse a gate expression. Raises GateError naming the offending token."""
    if len(text) > MAX_GATE_CHARS:
        raise GateError(f"gate is {len(text)} characters, at most {MAX_GATE_CHARS}",
                        token=text[:40])
    tokens = [t for t in re.sub(r"\s+", "", text).split(",")]
    if not text.strip():
        raise GateError("gate is empty: expected e.g. agreement>=0.98,p99_ms<=1.2x,errors==0",
                        token="")
    if len(tokens) > MAX_CLAUSES:
        raise GateError(f"gate has {len(tokens)} clauses, at most {MAX_CLAUSES}",
                        token=tokens[MAX_CLAUSES])
    clauses, seen = [], set()
    for tok in tokens:
        m = _CLAUSE.match(tok)
        if m is None:
            raise GateError(f"gate token {tok!r} does not parse: expected METRIC OP NUMBER[x] "
                            f"with METRIC one of {', '.join(METRICS)} and OP one of "
                            f"{' '.join(_OPS)}", token=tok)
        metric, op, num, rel = m.groups()
        if metric not in METRICS:
            raise GateError(f"gate token {tok!r}: unknown metric {metric!r} (known: "
                            f"{', '.join(METRICS)})", token=tok)
        if rel and metric not in RELATIVE_OK:
            raise GateError(f"gate token {tok!r}: a relative bound (x) is only meaningful for "
                            f"{', '.join(RELATIVE_OK)}", token=tok)
        value = float(num)
        if not math.isfinite(value):
            raise GateError(f"gate token {tok!r}: the number is not finite", token=tok)
        if (metric, op) in seen:
            raise GateError(f"gate token {tok!r}: {metric}{op} given twice", token=tok)
        seen.add((metric, op))
        clauses.append(Clause(metric, op, value, bool(rel)))
    return Gate(tuple(clauses))
