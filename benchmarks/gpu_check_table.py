"""The one table gpu_check prints: a row per measured case, each step's failure on its own row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

GiB = 2**30


def _flops(v: Optional[float]) -> str:
    return f"{v / 1e12:.1f} TFLOP/s" if v is not None and v >= 1e12 else (
        f"{v / 1e9:.1f} GFLOP/s" if v is not None else "-")


def short(text: str, limit: int = 200) -> str:
    """An error as one line of a table or a progress line; the record keeps it whole."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def machine_rows(r: dict) -> list[tuple[str, str]]:
    rows = []
    if r.get("gpu"):
        rows.append(("GPU", f"{r['gpu']}, compute capability {r['compute_capability']}, "
                            f"{r['memory_bytes'] / GiB:.1f} GiB, driver {r.get('driver') or '?'}"))
    rows.append(("versions", f"torch {r['torch']}, CUDA {r.get('cuda') or '-'}, cuDNN {r.get('cudnn') or '-'}"))
    rows.append(("CPU", r["cpu"]))
    for name, p in r["peaks"].items():
        text = (f"skipped: {p['skipped']}" if "skipped" in p else f"FAILED: {p['error']}" if "error" in p
                else _flops(p["flops"]))
        if "flops" in p and not p.get("native", True):
            text += f" (not native: {p['why']})"
        rows.append((f"matmul peak {name}", text))
    return rows


def _case(c: dict) -> tuple[str, str]:
    label = f"{c['preset']} {'fp32' if c['amp'] == 'off' else c['amp']}{' compiled' if c['compile'] else ''}"
    if "skipped" in c:
        return label, f"skipped: {c['skipped']}"
    if "error" in c:
        return label, f"FAILED: {c['error']}"
    parts = [f"{c['images_per_s']:,.0f} img/s"]
    if "share_of_peak" in c:
        parts.append(f"{c['share_of_peak']:.1%} of the {c['peak_used']} peak")
    if c.get("peak_memory_bytes") is not None:
        parts.append(f"{c['peak_memory_bytes'] / GiB:.2f} GiB peak")
    if c["compile"]:
        parts.append(f"warm-up (compile) {c['warmup_seconds']:.1f} s")
    if not c.get("native", True):
        parts.append(f"NOT NATIVE: {c['native_why']}")
    return label, ", ".join(parts)


def speed_rows(r: dict) -> list[tuple[str, str]]:
    return [_case(c) for p in r["presets"].values() for c in p["cases"]]


def resume_rows(r: dict) -> list[tuple[str, str]]:
    verdict = "bit-identical" if r["identical"] else (
        f"DIFFERENT: {r['tensors_differing']} of {r['tensors']} tensors (first {r['first_differing']})")
    return [(f"SIGKILL after step {r['killed_after_checkpoint']} of {r['steps']}, --resume", verdict)]


def data_path_rows(r: dict) -> list[tuple[str, str]]:
    rows = [(f"data.placement={k}", f"{v['images_per_s']:,.0f} img/s (deterministic)" if v["images_per_s"] else "-")
            for k, v in r["placements"].items()]
    same = {True: "identical", False: "DIFFERENT"}
    rows.append(("device vs host", f"first batch {same[r['first_batch']['identical']]}, final weights "
                                   f"{same[r['final_weights']['identical']]}"))
    return rows


def fid_rows(r: dict) -> list[tuple[str, str]]:
    ref = f"{r['n_generated']:,} generated vs {r['n_real']:,} {r['reference_split']}" if r.get("n_real") else ""
    return [(f"{r['preset']}, {r['train_seconds']:.0f} s ({r['kimg']:.0f} kimg)",
             f"{r['metric']} {r['value']:.2f} ({ref}); eval {r['eval_images_per_s']:,.0f} img/s"),
            ("", r["note"])]


ROWS: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "machine": machine_rows, "speed": speed_rows, "resume": resume_rows, "data_path": data_path_rows,
    "fid": fid_rows,
}


def rows_of(name: str, entry: dict, formats: dict[str, Callable]) -> list[tuple[str, str, str]]:
    """A step's rows; a failed step's error leads, then whatever it measured before failing."""
    out: list[tuple[str, str]] = []
    if not entry["ok"]:  # the whole message and the traceback are in the record
        out.append(("", f"FAILED: {short(entry['error'])}"))
    if entry.get("result") is not None and name in formats:
        try:
            out += formats[name](entry["result"])
        except (KeyError, TypeError, ValueError) as exc:  # a partial result: say so rather than hide the error row
            out.append(("", f"(partial result, not shown: {type(exc).__name__} {exc})"))
    return [(name if i == 0 else "", case, text) for i, (case, text) in enumerate(out)]


def print_table(record: dict[str, Any], formats: dict[str, Callable]) -> None:
    rows = [("step", "case", "result")]
    for name, entry in record["steps"].items():
        rows += rows_of(name, entry, formats)
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    print()
    for i, (a, b, c) in enumerate(rows):
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
        if i == 0:
            print(f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
    failed = record.get("failed")
    over = record["mode"] == "gpu" and record["seconds"] > 480  # what a person with a GPU was promised
    print(f"\n{len(record['steps'])} steps in {record['seconds']:.0f} s{' (over the 8-minute goal)' if over else ''}; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
