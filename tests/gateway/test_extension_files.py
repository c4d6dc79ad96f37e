"""The extension's files: the chart is the dashboard's own, no build step, nothing loaded from
elsewhere but Twitch's required helper, and the dashboard loads nothing from a CDN either."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extension"
DASHBOARD = ROOT / "gateway" / "dashboard"
TWITCH_HELPER = "https://extension-files.twitch.tv/helper/v1/twitch-ext.min.js"


def test_the_extension_draws_the_dashboards_chart():
    # One file: extension/ links to the dashboard's chart (zip stores the linked file's content).
    chart = EXTENSION / "sentiment-chart.js"
    assert chart.is_symlink() and chart.resolve() == (DASHBOARD / "sentiment-chart.js").resolve()


def test_pages_load_only_their_own_files():
    for page in (EXTENSION / "panel.html", EXTENSION / "video_overlay.html", DASHBOARD / "index.html"):
        html = page.read_text()
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        remote = [s for s in sources if "://" in s or s.startswith("//")]
        allowed = [TWITCH_HELPER] if page.parent == EXTENSION else []
        assert remote == allowed, f"{page.name} loads {remote}"
        for local in (s for s in sources if s not in remote):
            assert (page.parent / local.removeprefix("/static/")).is_file(), f"{page.name}: {local} is missing"
    for page in ("panel.html", "video_overlay.html"):
        html = (EXTENSION / page).read_text()
        assert 'name="streamsight-ebs"' in html and "viewer.js" in html
    assert "onAuthorized" in (EXTENSION / "viewer.js").read_text()
