"""`ganforge serve` and `ganforge report` in a real browser: headless Chromium driven by Playwright.

Skipped, with how to install it, when Debian's chromium is absent (`.ci/run` installs it)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from ganforge.cli import main
from ganforge.outputs.animation import grid_size

pytestmark = pytest.mark.slow  # a real browser

SRC = REPO / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(trained_runs, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "serve", str(trained_runs["cgan"]), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300  # importing Gradio on a busy 2-core machine takes a while
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                log.seek(0)
                assert proc.poll() is None, f"ganforge serve exited: {log.read()}"
                assert time.monotonic() < deadline, "ganforge serve did not answer within 300 s"
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_serve_generates_in_browser(server, browser):
    page = browser.new_page()
    external = []
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else external.append(r.url))
    page.goto(server)
    page.wait_for_selector("#generate", timeout=60_000)
    page.locator("#seed input").fill("5")
    page.locator("#count input").fill("4")
    page.locator("#class input").fill("3")
    page.locator("#generate").click()
    page.wait_for_function("() => { const i = document.querySelector('#result img');"
                           " return i && i.complete && i.naturalWidth > 0 }", timeout=120_000)
    size = page.evaluate("() => { const i = document.querySelector('#result img');"
                         " return [i.naturalWidth, i.naturalHeight] }")
    assert tuple(size) == grid_size(4, nrow=2, size=28)
    assert "4 images, seed 5, class 3" in page.locator("#status").inner_text()
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#result img").screenshot())).convert("L"))
    assert shot.std() > 1  # the image is drawn, not an empty frame

    page.locator("#class input").fill("12")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Error')", timeout=60_000)
    assert "class 12: out of range; this model has classes 0 to 9" in page.locator("#status").inner_text()
    page.locator("#class input").fill("")
    page.locator("#count input").fill("1000")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('count 1000')",
                           timeout=60_000)
    assert "expected a count from 1 to 64" in page.locator("#status").inner_text()
    assert external == []  # works offline: no fonts, analytics or scripts from elsewhere
    page.close()


def test_report_screenshot_is_not_blank(trained_runs, browser, tmp_path):
    run = tmp_path / "cgan"
    shutil.copytree(trained_runs["cgan"], run)
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(run)])
    assert exit_.value.code == 0
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((run / "report.html").as_uri())
    loaded = page.evaluate("() => [...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(loaded) >= 5 and all(loaded)
    path = tmp_path / "report.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    shot = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert shot.shape[0] > 900  # the whole page, several sections long
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    dark = (shot.mean(axis=2) < 128).mean()
    assert 0.01 < dark < 0.9  # text and images on a light page
