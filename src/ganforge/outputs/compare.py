"""`ganforge compare`: runs side by side: a Markdown table (and CSV) of what each run did and scored,
and one PNG of the runs' final fixed-noise grids, each labelled with its run.

A metric column whose runs were evaluated under different protocols (data split, N, feature
network, resize; see `runs.PROTOCOL_KEYS`) is flagged: such numbers are not comparable.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from PIL import Image

from ganforge import fsutil
from ganforge.outputs.animation import save_image_atomic, with_caption
from ganforge.outputs.runs import PROTOCOL_KEYS, RunInfo


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(runs: Sequence[RunInfo]) -> tuple[list[str], list[list], list[str]]:
    """(header, rows, notes): one row per run; notes name metrics computed under different protocols."""
    metrics = list(dict.fromkeys(k for r in runs for k in r.eval_values()))
    header = ["run", "preset", "epochs", "kimg", "time_s", "loss_d_last_epoch", "loss_g_last_epoch", *metrics]
    rows = []
    for r in runs:
        d, g = r.last_epoch_losses()
        done, values = r.done(), r.eval_values()
        rows.append([r.name, r.preset, done["epochs"], done["kimg"], done["time_s"], d, g,
                     *(values.get(m) for m in metrics)])
    notes = []
    for m in metrics:
        protocols = {r.name: r.protocol(m) for r in runs if m in r.eval_values()}
        last = PROTOCOL_KEYS.index("reference_data_digest")  # the last key: dropping it keeps zip's pairs
        if any(p[last] is None for p in protocols.values()):  # a record older than the digest: unknown, not different
            protocols = {name: p[:last] for name, p in protocols.items()}
        if len(set(protocols.values())) > 1:
            parts = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in zip(PROTOCOL_KEYS, p))
                              for name, p in protocols.items())
            notes.append(f"{m}: computed under different protocols, not comparable ({parts})")
    return header, rows, notes


def markdown(header: list[str], rows: list[list], notes: list[str]) -> str:
    flagged = {n.split(":", 1)[0] for n in notes}
    head = [h + (" (!)" if h in flagged else "") for h in header]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    lines += [f"\n(!) {n}" for n in notes]
    return "\n".join(lines)


def to_csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def side_by_side(runs: Sequence[RunInfo], *, gap: int = 8) -> Optional[Image.Image]:
    """The final grids in one image, each captioned with its run name and preset; None when none has one."""
    panels = []
    for r in runs:
        path = r.final_grid()
        if path is not None:
            with Image.open(path) as im:
                panels.append(with_caption(im.convert("RGB"), f"{r.name} ({r.preset}, {path.stem})", above=True))
    if not panels:
        return None
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
                    "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def write(runs: Sequence[RunInfo], out_dir: Path) -> dict[str, Path]:
    """compare.md, compare.csv and compare.png in `out_dir` (a folder checked writable beforehand)."""
    header, rows, notes = table(runs)
    written = {}
    for name, text in (("compare.md", markdown(header, rows, notes) + "\n"), ("compare.csv", to_csv(header, rows))):
        written[name] = fsutil.write_text(out_dir / name, text)
    image = side_by_side(runs)
    if image is not None:
        written["compare.png"] = save_image_atomic(image, out_dir / "compare.png")
    return written
