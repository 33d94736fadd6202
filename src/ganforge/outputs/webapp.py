"""The page behind `ganforge serve`: a Gradio app that generates images from a run's generator.

Inputs are bounded (count, seed, class, truncation) and checked by the same functions the commands
use; a bad value becomes a message on the page, never an exception. The page uses system fonts and
no external resource, so it works with no network. Gradio is imported only here, and this module
only by the serve command, so `import ganforge` stays light.
"""

from __future__ import annotations

import math
import secrets
import tempfile
from pathlib import Path
from typing import Optional

from ganforge.errors import UsageError
from ganforge.outputs.animation import grid_image
from ganforge.outputs.model import (
    Model,
    check_class,
    check_count,
    check_seed,
    check_truncation,
    describe_classes,
    generate,
    labels_for,
    latents,
    to_uint8,
)
from ganforge.training.ledger import describe, summary

MAX_COUNT = 64  # an 8 x 8 grid: enough to judge variety, small enough to come back at once on a CPU
# The browser's own fonts: Gradio's default theme fetches Google Fonts, which an offline machine
# cannot reach (the page would wait on the request before it draws).
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
MONO_FONTS = ["ui-monospace", "Menlo", "Consolas", "monospace"]


def _int(value, what: str) -> Optional[int]:
    if value is None or value == "":
        return None
    if isinstance(value, float) and not value.is_integer():
        raise UsageError(f"{what} {value}: expected a whole number")
    return int(value)


KEEP_DOWNLOADS = 16  # the newest grids stay downloadable; older ones are removed as new ones come


def prune_downloads(out_dir: Path, keep: int = KEEP_DOWNLOADS) -> None:
    """Remove all but the newest `keep` grids: a page left open for a day must not fill the disk."""
    grids = sorted(Path(out_dir).glob("ganforge-*.png"), key=lambda p: p.stat().st_mtime_ns)
    for old in grids[:-keep]:
        old.unlink(missing_ok=True)


def make_images(model: Model, *, seed, count, label, truncation, max_count: int = MAX_COUNT, out_dir: Path):
    """(grid PIL image, PNG path for download, caption) for the page's inputs; UsageError for a bad value."""
    seed = check_seed(_int(seed, "seed") or 0, "seed")  # an empty box is seed 0
    count = check_count(_int(count, "count") or 0, limit=max_count, what="count")
    k = check_class(model, _int(label, "class"), "class")
    t = check_truncation(float(truncation) if truncation not in (None, "", 0) else None, "truncation")
    # the seed's first `count` latents, as `ganforge sample --seed` draws them: the page and the
    # command line show the same images for the same seed
    z = latents(seed, 0, count, model.z_dim, t)
    images = to_uint8(generate(model, z, labels_for(model, 0, count, k)))
    grid = grid_image(images, nrow=math.ceil(math.sqrt(count)))  # as square as the count allows
    path = out_dir / f"ganforge-{model.run_dir.name}-seed{seed}-n{count}{'' if k is None else f'-class{k}'}.png"
    grid.save(path)
    prune_downloads(out_dir)
    what = f"class {model.class_name(k)}" if k is not None else ("classes in turn" if model.conditional else "")
    caption = f"{count} image{'s' if count > 1 else ''}, seed {seed}" + (f", {what}" if what else "") + (
        f", truncation {t}" if t else "")
    return grid, str(path), caption


def build_app(model: Model, *, max_count: int = MAX_COUNT, out_dir: Optional[Path] = None):
    """(Gradio Blocks, theme, folder the downloads are written to: `out_dir`, else a new temporary one)."""
    import gradio as gr

    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ganforge-serve-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    cfg = model.cfg
    classes = describe_classes(model) if model.conditional else "unconditional"

    def run(seed, count, label, truncation):
        try:
            grid, path, caption = make_images(model, seed=seed, count=count, label=label, truncation=truncation,
                                              max_count=max_count, out_dir=out_dir)
        except (UsageError, ValueError, OverflowError) as exc:
            return None, None, f"**Error:** {exc}"
        return grid, path, caption

    def reroll(count, label, truncation):
        # below 2^31: a seed the user can type back, and one JavaScript's numbers hold exactly
        seed = secrets.randbelow(2**31)
        return (seed, *run(seed, count, label, truncation))

    with gr.Blocks(title=f"ganforge: {model.run_dir.name}", analytics_enabled=False) as app:
        private = summary(model.run_dir)
        gr.Markdown(f"## {model.run_dir.name}\n{cfg.model.arch} on {cfg.data.name}, {classes}; step {model.step} "
                    f"({'EMA generator' if model.ema else 'generator'} of `{model.checkpoint.name}`)"
                    + (f"; {describe(private)}" if private else ""), elem_id="about")
        with gr.Row():
            with gr.Column(scale=1):
                # precision=None: Gradio would round 2.5 to 2 silently; the checks refuse a non-integer instead
                seed = gr.Number(label="seed", value=0, precision=None, elem_id="seed")
                count = gr.Number(label=f"count (1 to {max_count})", value=16, precision=None, elem_id="count")
                label = gr.Number(label=f"class (0 to {model.num_classes - 1}; empty: every class in turn)",
                                  value=None, precision=None, elem_id="class", visible=model.conditional)
                truncation = gr.Number(label="truncation (0: off; 0.05 to 10, smaller is cleaner and less varied)",
                                       value=0, elem_id="truncation")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    again = gr.Button("New seed", elem_id="regenerate")
            with gr.Column(scale=2):
                image = gr.Image(label="samples", type="pil", format="png", interactive=False, elem_id="result")
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="download (PNG grid)", elem_id="download")
        go.click(run, [seed, count, label, truncation], [image, download, status])
        again.click(reroll, [count, label, truncation], [seed, image, download, status])
    return app, theme, out_dir
