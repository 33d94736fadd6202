"""`ganforge report`: one self-contained HTML page telling how a run went.

Everything is inside the file: images as base64 data URIs, styles inline, system fonts only, no
script; it opens offline and can be mailed. Sections: summary, final grid and progress animation,
class grid, loss curves, metric history logged during training, evaluation table with its
protocol, the real images for reference, and the resolved config.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Optional

from ganforge import __version__
from ganforge.outputs.animation import gif_bytes, progress_frames
from ganforge.outputs.runs import RunInfo
from ganforge.training.ledger import describe, summary

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; } .muted { color: #666; font-size: 0.9em; }
.pair { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; } figcaption { color: #555; font-size: 0.85em; }
img.px { image-rendering: pixelated; width: 360px; } img.plot { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def data_uri(data: bytes, mime: str) -> str:
    # Images inlined as data: URIs, so report.html is one file that can be mailed or archived and
    # still shows everything, without the run folder beside it.
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(image: Optional[Path | bytes], caption: str, cls: str = "px", mime: str = "") -> str:
    """A figure of a file, or of image bytes made for the page (then `mime` says their type)."""
    if isinstance(image, Path):
        if not image.is_file():
            return ""
        image, mime = image.read_bytes(), "image/gif" if image.suffix == ".gif" else "image/png"
    if not image:
        return ""
    return (f'<figure><img class="{cls}" alt="{html.escape(caption)}" src="{data_uri(image, mime)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: Optional[list[str]], rows: list[list]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items())
    return str(v)


def metric_plot(run: RunInfo) -> Optional[bytes]:
    """PNG bytes of every eval/* value logged during training against kimg; None when none was logged."""
    rows = run.metric_history()
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in r if k.startswith("eval/")})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r.get("kimg", r.get("epoch", 0)), r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_title(key[len("eval/"):])
        ax.set_xlabel("kimg" if "kimg" in rows[0] else "epoch")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def eval_section(run: RunInfo) -> str:
    record = run.eval
    if not record:
        return (f'<p class="muted">No evaluation yet: run <code>ganforge eval {html.escape(str(run.dir))}</code> '
                f"and then this report again.</p>")
    rows = [[name, rec.get("value"), rec.get("std"), rec.get("n_generated"), rec.get("n_real"),
             rec.get("feature_network"), rec.get("resize_method"), rec.get("unavailable") or rec.get("warning")]
            for name, rec in record.get("metrics", {}).items()]
    protocol = (f"data {record.get('dataset')}, reference split {record.get('reference_split')}, "
                f"{record.get('n_generated')} generated images, seed {record.get('seed')}, device "
                f"{record.get('device')}, checkpoint {record.get('checkpoint', '?')}, ganforge "
                f"{record.get('ganforge_version')}, {record.get('seconds')} s")
    return (_table(["metric", "value", "std", "n gen", "n real", "network", "resize", "note"], rows)
            + f'<p class="muted">Protocol: {html.escape(protocol)}</p>')


def render(run: RunInfo) -> str:
    d, g = run.last_epoch_losses()
    done = run.done()
    cfg = run.config
    summary_rows = [["preset", run.preset], ["description", cfg.get("description", "")],
               ["data", f"{cfg.get('data', {}).get('name')} ({cfg.get('data', {}).get('split', 'train')} split)"],
               ["architecture", cfg.get("model", {}).get("arch")], ["loss", cfg.get("loss", {}).get("name")],
               ["epochs completed", done["epochs"]], ["steps", done["steps"]],
               ["thousand images seen", done["kimg"]], ["training time (s)", done["time_s"]],
               ["D / G loss, last epoch", f"{_cell(d)} / {_cell(g)}"]]
    private = summary(run.dir)
    if private:  # the guarantee its generator was trained under
        summary_rows += [["privacy", describe(private)], ["privacy: labels", private["labels"]]]
    gif = run.image("samples/progress.gif")
    if gif is None and run.final_grid() is not None:  # made in memory: a report never writes into the run
        frames = progress_frames(run.dir)
        gif = gif_bytes(frames) if frames else None
    final = run.final_grid()
    metric_png = metric_plot(run)
    parts = [
        f"<h1>Run {html.escape(run.name)}</h1>",
        f'<p class="muted">{html.escape(str(run.dir.resolve()))} · report by ganforge {__version__}</p>',
        _table(None, summary_rows),
        "<h2>Samples</h2>",
        '<div class="pair">' + _img(final, f"final fixed-noise grid ({final.stem})" if final else "")
        + _img(gif, "progress: the same noise at every epoch", mime="image/gif") + "</div>",
    ]
    if run.image("samples/classes.png"):
        parts += ["<h2>Classes</h2>", '<div class="pair">'
                  + _img(run.image("samples/classes.png"), "one row per class, the same noise in every row")
                  + "</div>"]
    parts += ["<h2>Training curves</h2>",
              _img(run.image("loss_curves.png"), "losses and discriminator outputs", cls="plot")
              or '<p class="muted">No loss curves (the run logged no step).</p>']
    parts += ["<h2>Metrics logged during training</h2>",
              f'<figure><img class="plot" alt="metric history" src="{data_uri(metric_png, "image/png")}"></figure>'
              if metric_png else '<p class="muted">None logged (train.eval_every was 0).</p>']
    parts += ["<h2>Evaluation</h2>", eval_section(run)]
    if run.image("samples/real.png"):
        parts += ["<h2>Real images</h2>", _img(run.image("samples/real.png"), "training data, for reference")]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(run.config_text)}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ganforge report: {html.escape(run.name)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
