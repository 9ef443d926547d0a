"""The what-if app end to end: Voila serves notebook 05 (as `make whatif` does) on a free localhost
port, headless Chromium (Debian's package, driven by Playwright) loads it, waits for the panel,
drags the ENS alpha slider and checks that the figures and the numbers re-render; a screenshot is
saved as results/whatif_app.png. Skipped, with the command that installs it, where there is no
Chromium (`.ci/run` installs it, so CI always runs this test)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags a sandboxed CI machine with no network needs (no GPU, no background connections)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: the whole test (Voila's start, the notebook, the panel's first draw on the default profile, the
#: slider's redraw) took 33-37 s on the 2-core CPU; the margin is for a busy machine
READY_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(tmp_path):
    """``(url, log path)`` of a Voila server of notebook 05, shut down afterwards."""
    port = _free_port()
    env = {**os.environ, "ENS_WHATIF_APP": "1", "ENS_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)
    log = tmp_path / "voila.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("voila")), "notebooks/05_what_if.ipynb",
                                 f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Voila did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _ens_row(page) -> str:
    # the row labelled exactly "ENS" (other labels contain it: "surrogate, ENS's training time")
    return next(r for r in page.locator("table.ens-summary tr").all_inner_texts() if r.split("\t")[0].strip() == "ENS")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium for the browser test: install it with "
                                              "`sudo apt-get install chromium` (Debian/Ubuntu)")
def test_the_app_loads_and_rerenders_after_a_slider_moves(app):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright
    url, log = app
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2300})
            page.goto(url, wait_until="commit", timeout=READY_S * 1000)  # Voila executes the notebook first
            status = page.locator(".widget-html", has_text=re.compile("up to date|cannot run|failed"))
            status.first.wait_for(timeout=READY_S * 1000)
            assert "up to date" in status.first.inner_text(), status.first.inner_text()
            images = page.locator("img")
            assert images.count() >= 2
            before_src = images.first.get_attribute("src")
            before_row = _ens_row(page)
            # drag the ENS alpha slider's handle to the right (the value is sent on release)
            slider = page.locator(".widget-slider", has_text="ENS alpha").first
            handle = slider.locator(".noUi-handle").first
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function("([sel, old]) => document.querySelector(sel).getAttribute('src') !== old",
                                   arg=["img", before_src], timeout=60_000)
            page.locator(".widget-html", has_text="up to date").first.wait_for(timeout=60_000)
            after_row = _ens_row(page)
            assert after_row != before_row, "the ENS row of the summary did not change after alpha moved"
            page.screenshot(path=str(out / "whatif_app.png"), full_page=True)
        finally:
            browser.close()
    assert "Traceback" not in log.read_text()
