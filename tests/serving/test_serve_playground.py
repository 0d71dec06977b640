"""The playground page driven by headless Chromium: a user's history and recommendations render.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); the test skips
when no Chromium binary is found. The screenshot is kept in the test's temporary folder, or
in ``$GENREC_SCREENSHOT_DIR`` when that is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from genrec.serving import ServeSettings, create_app
from genrec.serving.testing import ThreadServer

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars",
          "--virtual-time-budget=15000"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([browser, *_FLAGS, f"--user-data-dir={profile}", *args],
                          check=False, capture_output=True, text=True, timeout=90)


@pytest.mark.slow
def test_playground_in_headless_chromium(bundles, tmp_path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary: apt-get install chromium (.ci/run does this)")
    app = create_app([bundles.ease, f"popular={bundles.pop}"],
                     settings=ServeSettings(feedback_url=str(tmp_path / "fb.db")))
    with ThreadServer(app) as srv:
        url = f"{srv.url}/playground?model=ease&user=196&k=10"
        dom = _run(browser, tmp_path / "profile-dom", "--dump-dom", url)
        shot_dir = Path(os.environ.get("GENREC_SCREENSHOT_DIR") or tmp_path)
        shot_dir.mkdir(parents=True, exist_ok=True)
        shot = shot_dir / "playground.png"
        png = _run(browser, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    html = dom.stdout
    assert "genrec playground" in html, dom.stderr[-2000:]
    assert 'data-ready="1"' in html, "the page never rendered recommendations"
    assert "History of user 196" in html and "Top 10 from ease" in html
    assert "personalised recommendations" in html
    # The titles the service recommends are on the page.
    svc = app.state.pool.get("ease")
    r = svc.recommend(user="196", k=10)
    for title in [svc.bundle.titles[i] for i in r.items[:3]]:
        assert title.replace("&", "&amp;") in html
    assert shot.is_file() and shot.stat().st_size > 10_000, png.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
