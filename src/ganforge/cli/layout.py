"""Plain-text layout for listings that must fit an 80-100-column terminal: wrapped cells, wrapped commands."""

from __future__ import annotations

import shutil

MIN_WIDTH, MAX_WIDTH = 80, 100


def width() -> int:
    """The terminal's width, kept within 80-100 columns (80 when output is not a terminal)."""
    return max(MIN_WIDTH, min(MAX_WIDTH, shutil.get_terminal_size((MIN_WIDTH, 24)).columns))


def wrap(text: str, columns: int) -> list[str]:
    """`text` in lines of at most `columns`; a path longer than a line is broken after a slash."""
    pieces: list[tuple[str, bool]] = []          # (piece, starts a new word)
    for word in text.split():
        first = True
        while len(word) > columns:
            cut = word.rfind("/", 0, columns) + 1 or columns
            pieces.append((word[:cut], first))
            word, first = word[cut:], False
        pieces.append((word, first))
    lines, line = [], ""
    for piece, new_word in pieces:
        joined = line + (" " if new_word and line else "") + piece
        if line and len(joined) > columns:
            lines.append(line)
            line = piece
        else:
            line = joined
    return lines + [line]


def cleanup(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines)


def command(groups: list[str], indent: int, columns: int) -> list[str]:
    """A shell command in lines of at most `columns`, continued with ` \\` so it still pastes as one.
    `groups` are the pieces that stay on one line where they fit, e.g. an option and its value."""
    lines, line = [], " " * indent
    room = columns - indent - 6
    # a piece too long for a line of its own is split into words; a single word (a long path) cannot be
    groups = [w for g in groups for w in (g.split(" ") if len(g) > room else [g])]
    for i, group in enumerate(groups):
        tail = 0 if i == len(groups) - 1 else 2     # room for " \\" unless it is the last piece
        if line.strip() and len(line) + 1 + len(group) + tail > columns:
            lines.append(line + " \\")
            line = " " * (indent + 4)
        line += (" " if line.strip() else "") + group
    return lines + [line]


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], columns: int) -> str:
    """Columns sized to their longest cell except the last, which wraps; a row may hold several lines
    in its last cell, separated by newlines."""
    fixed = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    indent = sum(fixed) + 2 * len(fixed)
    room = columns - indent
    out = ["  ".join(f"{c:<{w}}" for c, w in zip(header, fixed + [0])),
           "  ".join("-" * w for w in fixed + [room])]
    for row in rows:
        tail = [piece for part in row[-1].split("\n") for piece in wrap(part, room)]
        out.append("  ".join(f"{c:<{w}}" for c, w in zip(row[:-1], fixed)) + "  " + tail[0])
        out += [" " * indent + piece for piece in tail[1:]]
    return cleanup(out)
