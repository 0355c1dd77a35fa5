"""The table of every setting in docs/operating.md, generated from the registry (``core.settings``).

    .venv/bin/python -m server.settings_table           # rewrites the table between the markers
    .venv/bin/python -m server.settings_table --check   # exit 1 when the committed table is stale

The table sits between ``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->``
in the "Settings" section; a test checks that the committed one is what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core import settings
from core.paths import ROOT

DOC = ROOT / "docs" / "operating.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _kind(kind: type) -> str:
    return "path" if kind is Path else kind.__name__


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _meaning(setting: settings.Setting) -> str:
    return f"**Tests only.** {setting.meaning}" if setting.test_only else setting.meaning


def render() -> str:
    """Both tables, as markdown: the environment variables, then the ``handler:`` keys."""
    lines = ["Environment variables (an unknown `STYLE_*` variable is refused by name):", "",
             _row("Variable", "Type", "Default", "Read by", "Meaning"), _row(*["---"] * 5)]
    for s in settings.ENVIRONMENT.values():
        lines.append(_row(f"`{s.name}`", _kind(s.kind), _value(s.default), s.where, _meaning(s)))
    lines += ["", "Model config `handler:` keys, per model family (an unknown key stops the worker, naming it):", "",
              _row("Key", "Models", "Type", "Default", "Meaning"), _row(*["---"] * 5)]
    seen: set[int] = set()
    for keys in settings.HANDLER_KEYS.values():
        for s in keys.values():
            if id(s) not in seen:  # a group of keys shared by several families is listed once
                seen.add(id(s))
                lines.append(_row(f"`{s.name}`", s.where, _kind(s.kind), _value(s.default), _meaning(s)))
    return "\n".join(lines)


def with_table(text: str, table: str) -> str:
    """``text`` with whatever stands between the markers replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} ... {END} pair in the document")
    before, rest = text.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    updated = with_table(text, render())
    if "--check" in argv:
        if updated != text:
            print(f"{DOC} has a stale settings table: run python -m server.settings_table", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated)
    print(f"wrote the settings table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
