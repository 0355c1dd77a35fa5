"""The Streamlit page end to end, in a real headless Chromium driven by Playwright.

Streamlit runs as a subprocess, started by ``scripts/app.sh`` on a free loopback port and
talking to the session's real TorchServe (``server`` fixture). The browser uploads a photo,
clicks Stylize, and checks a stylized image appears and downloads; the same page pointed at
a refusing port must fall back to local ONNX Runtime and say so; the Gatys path must show
its progress while the server optimizes. The server-path page is saved as
``docs/streamlit.png``, the screenshot docs/app.md shows.

Chromium is Debian's (``scripts/install.sh --dev`` installs it with apt): Playwright's own browser
downloads are not available on these machines, so ``executable_path`` points at the system one.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
APP_SH = ROOT / "scripts" / "app.sh"
SCREENSHOT = ROOT / "docs" / "streamlit.png"
#: What works here as root in a container: no sandbox, no GPU, and nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIDE = 160  # the fallback and Gatys runs: small, they check behaviour
SCREENSHOT_SIDE = 400  # docs/app.md's picture: about the width it is shown at, so it looks sharp
TIMEOUT_MS = 60_000
QUIET_MS = 750  # no script state change for this long: the page is idle


@pytest.fixture(scope="session")  # session, like ``server``: so it is set up (and can skip) first
def chromium() -> str:
    """``$CHROMIUM_PATH``, else ``chromium`` (Debian) or ``chromium-browser`` on PATH.

    Skips only when no Chromium is installed at all, and never in CI (``CI=true``), where a
    missing install step must fail the run rather than turn this test into a quiet skip.
    A ``$CHROMIUM_PATH`` naming nothing is a mistake, not an absence, so it fails; a
    Chromium that is present but broken fails when launched."""
    wanted = os.environ.get("CHROMIUM_PATH")
    if wanted:
        if not (os.path.isfile(wanted) and os.access(wanted, os.X_OK)):
            pytest.fail(f"CHROMIUM_PATH={wanted} is not an executable file")
        return wanted
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "Chromium is not installed (no chromium or chromium-browser on PATH): run scripts/install.sh --dev"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser test")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"streamlit not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_url(chromium, server, tmp_path_factory) -> Iterator[str]:
    """The page as users start it (``scripts/app.sh``, which ``exec``s ``streamlit run``) on a
    free loopback port, headless, pointed at the test TorchServe; stopped by its PID.

    Asks for ``chromium`` first so a machine without a browser skips before any server starts."""
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    command = [str(APP_SH), "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    env = {**os.environ, "STYLE_SERVER_URL": server.inference_url, "STYLE_MANAGEMENT_URL": server.management_url,
           "PYTHON": sys.executable}
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(chromium, app_url, tmp_path_factory) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a new empty profile folder."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _photo(source: Path, side: int, folder: Path) -> Path:
    image = Image.open(source).convert("RGB")
    image.thumbnail((side, side))
    path = folder / "photo.jpg"
    image.save(path, "JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def photo_file(content_photos, tmp_path_factory) -> Path:
    return _photo(content_photos[0], SIDE, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def screenshot_photo(content_photos, tmp_path_factory) -> Path:
    return _photo(content_photos[0], SCREENSHOT_SIDE, tmp_path_factory.mktemp("screenshot"))


@pytest.fixture(scope="module")
def painting_file(tmp_path_factory) -> Path:
    """A style image for the Gatys path: a painting from shared/ if present, else a made-up one."""
    path = tmp_path_factory.mktemp("painting") / "painting.jpg"
    source = SHARED / "images" / "styles" / "wave.jpg"
    image = Image.open(source).convert("RGB") if source.exists() else Image.new("RGB", (96, 64), (40, 90, 160))
    image.thumbnail((SIDE, SIDE))
    image.save(path, "JPEG", quality=95)
    return path


@pytest.fixture
def page(browser, app_url) -> Iterator[Page]:
    page = browser.new_page()
    page.add_init_script(_TRACK_SCRIPT_STATE)
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)  # a busy 2-core machine: reruns can take seconds
    try:
        page.goto(app_url)
        expect(page.get_by_role("heading", name="Neural style transfer")).to_be_visible()
        yield page
    finally:
        page.close()


#: Runs in every page before Streamlit's own scripts: remembers when the script state on
#: ``stApp`` (running, notRunning, …) last changed. A MutationObserver sees every change,
#: even a rerun shorter than any polling interval would notice.
_TRACK_SCRIPT_STATE = """
window.scriptStateChangedAt = performance.now();
new MutationObserver(() => { window.scriptStateChangedAt = performance.now(); })
    .observe(document, {subtree: true, attributes: true, attributeFilter: ["data-test-script-state"]});
"""

#: True once the script is not running and its state has not changed for ``QUIET_MS``,
#: counted from ``since`` at the latest. A file chosen while a rerun is starting (say, right
#: after a slider key press) can be dropped by Streamlit's uploader (1.67), and the rerun a
#: key press asks for starts only after a round trip to the server, so the test waits, as a
#: person would, for the page to stay quiet for a moment after its last action.
_QUIET = """({since, quietMs}) => {
    const state = document.querySelector("[data-testid='stApp']")?.dataset.testScriptState;
    return state === "notRunning" && performance.now() - Math.max(window.scriptStateChangedAt, since) > quietMs;
}"""


def _quiet(page: Page) -> None:
    since = page.evaluate("performance.now()")
    page.wait_for_function(_QUIET, arg={"since": since, "quietMs": QUIET_MS}, polling=100)


def _upload(page: Page, label: str, path: Path) -> None:
    """Chooses ``path`` in the uploader labelled ``label`` and waits until it lists the file.

    The tests choose the photo first, as a person would (its uploader tops the page), and
    every choice waits for a quiet page, so no rerun is under way while a file is sent."""
    uploader = page.get_by_test_id("stFileUploader").filter(has=page.get_by_text(label, exact=True))
    chooser = uploader.locator("input[type='file']")
    _quiet(page)
    expect(chooser).to_be_enabled()  # Streamlit disables widgets while its connection is down
    chooser.set_input_files(path)
    expect(uploader).to_contain_text(path.name)


def _stylize(page: Page) -> None:
    """Clicks Stylize and waits for both result images to be drawn."""
    button = page.get_by_role("button", name="Stylize")
    expect(button).to_be_enabled()
    _quiet(page)
    button.click()
    result = page.locator(".st-key-result")
    expect(result.locator("img")).to_have_count(2)
    # both images decoded and drawn, not just their tags present
    page.wait_for_function("() => [...document.querySelectorAll('.st-key-result img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")


def _screenshot(page: Page, path: Path) -> None:
    """The whole page, top to bottom. Streamlit scrolls an inner container, so Playwright's
    ``full_page`` sees one viewport only: grow the viewport to the content's height instead."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 4000)})
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    page.wait_for_timeout(300)  # one layout pass after the resize
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path))


def _downloaded(page: Page) -> Image.Image:
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PNG").click()
    return Image.open(io.BytesIO(Path(info.value.path()).read_bytes())).convert("RGB")


def _assert_painted(painted: Image.Image, photo: Path) -> None:
    original = Image.open(photo).convert("RGB")
    assert painted.size == original.size
    difference = np.abs(np.asarray(painted, np.int16) - np.asarray(original, np.int16)).mean()
    assert difference > 10, f"the downloaded image looks like the photo (mean difference {difference:.1f})"


def test_upload_stylize_on_the_server_and_download(page, screenshot_photo):
    expect(page.get_by_text("TorchServe is reachable.")).to_be_visible()
    _upload(page, "Photo", screenshot_photo)
    page.get_by_role("radiogroup").get_by_text("udnie", exact=True).click()  # not the thumbnail's caption
    expect(page.get_by_role("radio", name="udnie", exact=True)).to_be_checked()
    _stylize(page)
    expect(page.locator(".st-key-result")).to_contain_text("Stylized by TorchServe")
    expect(page.locator(".st-key-result")).to_contain_text("'udnie'")
    _screenshot(page, SCREENSHOT)
    _assert_painted(_downloaded(page), screenshot_photo)


def test_refusing_server_falls_back_to_local_onnx(page, photo_file):
    _upload(page, "Photo", photo_file)
    with socket.socket() as refusing:  # bound, never listening: connections are refused at once
        refusing.bind(("127.0.0.1", 0))
        url_field = page.get_by_role("textbox", name="TorchServe inference URL")
        url_field.fill(f"http://127.0.0.1:{refusing.getsockname()[1]}")
        url_field.press("Enter")
        expect(page.get_by_text("Fast styles will run locally")).to_be_visible()
        _stylize(page)
        expect(page.locator(".st-key-result")).to_contain_text("Stylized locally with")
        _assert_painted(_downloaded(page), photo_file)


#: Records every text the Gatys progress bar shows, whether a preview image was on the page
#: with it, and whether the result was on the page yet, so the test can tell live progress
#: from a bar filled in after the fact. (The live loss chart is left to test_app.py: Streamlit
#: loads its chart component lazily, so whether it is drawn before a short run ends is luck.)
_WATCH_PROGRESS = """() => {
    window.progressSeen = [];
    new MutationObserver(() => {
        const bar = document.querySelector("[data-testid='stProgress']");
        const text = bar ? bar.innerText.trim() : "";
        const preview = [...document.querySelectorAll("[data-testid='stImage']")]
            .some(image => image.innerText.includes("Preview") && image.querySelector("img") !== null);
        const result = document.querySelector(".st-key-result") !== null;
        const entry = {text, preview, result};
        const last = window.progressSeen.at(-1);
        if (text && (!last || Object.keys(entry).some(key => last[key] !== entry[key]))) {
            window.progressSeen.push(entry);
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _set_slider(page: Page, name: str, value: int) -> None:
    """Keyboard, as a user would: Home, then right arrows.

    Streamlit's slider (react-aria) keeps a visually hidden ``<input type=range>`` with
    ``min``/``step``/``value`` and the shown number as ``aria-valuetext``; each key press
    commits the value, which reruns the script."""
    slider = page.get_by_role("slider", name=name)  # not exact: the name is the label twice (aria-labelledby)
    slider.press("Home")
    minimum, step = int(slider.get_attribute("min")), int(slider.get_attribute("step"))
    expect(slider).to_have_value(str(minimum))
    for _ in range((value - minimum) // step):
        slider.press("ArrowRight")
    expect(slider).to_have_value(str(value))
    expect(slider).to_have_attribute("aria-valuetext", str(value))


def test_gatys_path_shows_live_progress(page, photo_file, painting_file):
    """Live progress and previews while the server optimizes, none of it left once the result
    is in, the loss curve with the result; the loss network and precision named before the
    click and under the result.

    The last two come from the server's description of its loss networks (management API,
    ``GET /models/gatys?customized=true``) and the stream's ``start`` and ``result`` lines."""
    page.evaluate(_WATCH_PROGRESS)
    _upload(page, "Photo", photo_file)
    page.get_by_role("radiogroup").get_by_text("Gatys (slow, iterative)").click()
    _upload(page, "Style image (a painting)", painting_file)
    _set_slider(page, "Iterations", 3)
    _set_slider(page, "Size (longer side, px)", 64)
    _stylize(page)
    result = page.locator(".st-key-result")
    expect(result).to_contain_text("Gatys by TorchServe at")
    expect(result).to_contain_text(": 3 iterations in")  # the server got the slider's value
    expect(result.get_by_test_id("stVegaLiteChart")).to_have_count(1)  # the loss curve stays with the result
    expect(page.get_by_test_id("stProgress")).to_have_count(0)  # nothing of the live view is left
    expect(page.get_by_test_id("stImage").filter(has_text="Preview")).to_have_count(0)
    seen = page.evaluate("window.progressSeen")
    live = [entry for entry in seen if not entry["result"]]
    assert any(entry["text"].startswith("Iteration 1/3") for entry in live), f"no progress before the result: {seen}"
    assert any(entry["preview"] for entry in live), f"no preview before the result: {seen}"
    painted = _downloaded(page)
    assert max(painted.size) == 64  # the size slider reached the server too
    expect(page.get_by_text(re.compile(r"^The server will paint with the loss network VGG1[69]"))).to_be_visible()
    expect(result).to_contain_text(re.compile(r"Painted by VGG1[69]\b.*, (fp32|bf16), 3 iterations in"))
