"""`ganforge serve RUN_DIR`: a local web page that generates images from a run (Gradio, offline)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ganforge.cli.sample import add_model_arguments, load
from ganforge.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD = 1  # bytes: the page takes no file, so Gradio's upload route refuses every real one
# Small images (28 px digits) shown large and sharp; the file itself keeps its size.
CSS = "#result img { image-rendering: pixelated; width: min(100%, 480px); height: auto; }"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page to generate images from a run",
                       description="Serve a small web app (Gradio, no network needed) to generate images: seed, "
                                   "count, class, truncation, a regenerate button and a download.")
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-count", type=int, default=64, help="most images one click may ask for (default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 1 to 65535")
    if not 1 <= args.max_count <= 1024:
        raise UsageError(f"--max-count {args.max_count}: expected 1 to 1024")
    # Before Gradio is imported: no usage reporting, no Hugging Face Hub calls, and Gradio's own copies
    # of served files inside our temporary folder, removed with it at exit.
    work = Path(tempfile.mkdtemp(prefix="ganforge-serve-"))
    try:
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
        return _serve(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _serve(args: argparse.Namespace, work: Path) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("ganforge serve needs Gradio: pip install 'ganforge[serve]'") from None
    from ganforge.outputs.webapp import build_app

    model = load(args)
    app, theme, out_dir = build_app(model, max_count=args.max_count, out_dir=work / "downloads")
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page",
              file=sys.stderr)
    print(f"serving {model.run_dir} ({model.checkpoint.name}) on http://{args.host}:{args.port}  (Ctrl-C stops)",
          flush=True)
    try:
        app.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
            quiet=True, ssr_mode=False, theme=theme, allowed_paths=[str(out_dir)], footer_links=[], css=CSS,
            max_file_size=MAX_UPLOAD)
    except OSError as exc:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot listen ({exc})") from None
    return 0
