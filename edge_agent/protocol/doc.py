"""The reference section of docs/mqtt.md, rendered from :mod:`edge_agent.protocol`.

``python -m edge_agent.protocol.doc`` prints it; tests/test_protocol.py checks that the
text between the markers in docs/mqtt.md is exactly this, so the document cannot drift
from the enums.
"""

from __future__ import annotations

from itertools import groupby

from edge_agent.protocol.kinds import (
    RESULT_MEANING,
    UPDATE_STOPPED,
    DeviceState,
    EventKind,
    Level,
    RuntimeName,
    UpdatePhase,
)
from edge_agent.protocol.messages import SCHEMA_VERSION

BEGIN = "<!-- protocol:begin (generated: python -m edge_agent.protocol.doc) -->"
END = "<!-- protocol:end -->"


def _codes(values: object) -> str:
    return ", ".join(f"`{v}`" for v in values)  # type: ignore[attr-defined]


def render() -> str:
    """The markdown between BEGIN and END (without the markers)."""
    lines = [f"Schema version: `{SCHEMA_VERSION}` (the envelope's `schema`).", "",
             "| room | event kinds (`kind` of `edge/<device>/events`) |", "|---|---|"]
    for room, kinds in groupby(sorted(EventKind, key=lambda k: k.room), key=lambda k: k.room):
        lines.append(f"| {room} | {_codes(kinds)} |")
    lines += ["", f"Event levels: {_codes(Level)}.", "",
              "| update result (`update.last.result`) | meaning |", "|---|---|"]
    lines += [f"| `{r}` | {m} |" for r, m in RESULT_MEANING.items()]
    lines += ["", f"Update phases (`update.phase`): {_codes(UpdatePhase)}; `{UPDATE_STOPPED}` "
              "when the update component is configured but not running.", "",
              f"Device states (`state` of the status): {_codes(DeviceState)}.", "",
              f"Runtimes (`runtime.name`, `[agent] runtime`): {_codes(RuntimeName)}."]
    return "\n".join(lines)


def section(markdown: str) -> str | None:
    """The text between BEGIN and END in ``markdown`` (None if the markers are missing)."""
    start, end = markdown.find(BEGIN), markdown.find(END)
    if start < 0 or end < start:
        return None
    return markdown[start + len(BEGIN):end].strip("\n")


if __name__ == "__main__":
    print(render())
