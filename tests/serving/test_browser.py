"""The web app in a real browser: Playwright driving Debian's Chromium, headless, against `tagger serve` over a
scanned library of real clips. Load the library, filter by a facet, open a track (bars, taggram), play a
preview (range requests), correct a genre and read the file back with TagLib and mediafile; no JavaScript
error may be logged. Set TAGGER_SCREENSHOTS=DIR to keep screenshots of each page (the README's come from here).

Needs the `playwright` package (dev extra) and a Chromium binary (.ci/run installs Debian's `chromium`);
without them it skips with the reason, except where TAGGER_REQUIRE_BROWSER=1 (CI), where it fails.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from audiofiles import music_like, write_audio
from conftest import EXPORTER_DATA, serving

from tagger.config import load_config
from tagger.library.store import Store
from tagger.pipeline.scanner import load_models, scan
from tagger.serving.http import ServeConfig, make_server

CHROMIUM = os.environ.get("TAGGER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if os.environ.get("TAGGER_REQUIRE_BROWSER") == "1":  # CI sets it: there a missing browser is a failure
    assert CHROMIUM, "TAGGER_REQUIRE_BROWSER=1 but no Chromium binary was found"
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")
    pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no Chromium binary (apt-get install chromium)")
taglib = pytest.importorskip("taglib")
mediafile = pytest.importorskip("mediafile")


@pytest.fixture(scope="module")
def served(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("browser")
    lib = root / "Music"
    lib.mkdir()
    for clip in sorted(EXPORTER_DATA.glob("*.ogg")):  # real CC recordings: string orchestra, solo trumpet
        shutil.copy(clip, lib / clip.name)
        os.chmod(lib / clip.name, 0o644)
    (lib / "Generated").mkdir()
    for i in range(3):
        write_audio(lib / "Generated" / f"take {i}.mp3", music_like(20.0 + 5 * i, 44100, 2, seed=i), 44100)
    cfg = replace(load_config(None), database=root / "db", library=(lib,))
    with Store(cfg.database) as store:
        scan([lib], cfg, load_models(cfg), store)  # the default model set, as a user's scan would use
    with serving(make_server(cfg, msd_model, ServeConfig(port=0)), "tagger-test-browser-serve") as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}", lib


@pytest.fixture
def page(served):
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        pg.set_default_timeout(30_000)
        yield pg
        context.close()
        browser.close()
    assert not errors, errors  # no JavaScript error, no failed resource, on any page visited


def shot(pg, name: str) -> None:
    folder = os.environ.get("TAGGER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_library_filter_track_preview_and_correction(served, page):
    base, lib = served
    page.goto(base + "/")
    rows = page.locator("table.tracks tbody tr")
    assert rows.count() == 5 and page.inner_text("#total") == "5"
    shot(page, "library")

    # Filter by a facet: the folder of generated takes.
    page.click('aside a[data-facet="folder"][data-value="Generated"]')
    page.wait_for_url("**/?folder=Generated*")
    assert rows.count() == 3 and page.inner_text("#total") == "3"
    assert all("take" in rows.nth(i).inner_text() for i in range(3))
    # Unselect it again, sort by length.
    page.click('aside li.chosen a[data-facet="folder"]')
    page.click('th a[data-sort="duration"]')
    page.wait_for_url("**sort=duration**")
    assert rows.count() == 5

    # A preview plays, streamed with range requests.
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/audio/" in r.url else None)
    page.locator("button.play").first.click()
    # Polled from here: wait_for_function evaluates a string in the page, which the page's CSP forbids.
    deadline = time.monotonic() + 30
    while page.evaluate("document.getElementById('player').currentTime") < 0.3:
        assert time.monotonic() < deadline, "the preview never started playing"
        page.wait_for_timeout(100)
    assert 206 in statuses, statuses

    # The track page: every model's bars, the decision with its reason, a taggram drawn from all windows.
    page.goto(base + "/?q=Hungarian")
    page.click("table.tracks tbody a[href^='/track/']")
    page.wait_for_selector(".taggram[data-ready='yes']")
    assert page.locator(".model").count() >= 2
    width = page.eval_on_selector(".model .bar .fill", "el => el.getBoundingClientRect().width")
    assert width > 0
    assert page.locator("tr[data-field='genre'] .reason").inner_text().strip()
    shot(page, "track")

    # Correct the genre: written through the safe write, read back by real tag readers.
    path = lib / "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg"
    form = page.locator("form.correct[data-field='genre']")
    form.locator("input[name=values]").fill("Romantic, Classical")
    form.locator("button[value=set]").click()
    page.wait_for_selector("form.correct[data-field='genre'][data-status='200']")
    assert "written to the file" in form.locator("output").inner_text()
    with taglib.File(str(path)) as f:
        assert f.tags["GENRE"] == ["Romantic", "Classical"] and f.tags["TAGGER_LOCKED"] == ["GENRE"]
    assert mediafile.MediaFile(str(path)).genres == ["Romantic", "Classical"]
    page.reload()
    assert page.locator("tr[data-field='genre'] .in-file").inner_text().startswith("Romantic, Classical")
    assert "locked" in page.locator("tr[data-field='genre'] .lock").inner_text()
    # Give it back to the tool: the lock goes, the values stay as the user's.
    page.locator("form.correct[data-field='genre'] button[value=unlock]").click()
    page.wait_for_selector("form.correct[data-field='genre'][data-status='200']")
    with taglib.File(str(path)) as f:
        assert f.tags["GENRE"] == ["Romantic", "Classical"] and "TAGGER_LOCKED" not in f.tags

    # A playlist from the track, and the status page.
    page.click("text=A playlist from this track")
    assert page.locator("ol.playlist-tracks li").count() >= 3
    shot(page, "playlist")
    page.goto(base + "/status")
    page.wait_for_selector("#status[data-running='false']")
    assert "not running" in page.inner_text("#status")
    shot(page, "status")
