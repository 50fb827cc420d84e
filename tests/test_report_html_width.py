"""The HTML report at a laptop's 1280 px in real Chromium: every table fits inside its card (the
rule table, scored against reference transcripts, has ten columns: it must not run past its
card's edge), and the page never scrolls sideways."""

from __future__ import annotations

import json

from granary_pipe.report.html import write_html

try:
    from tests.helpers_rundir import make_run
    from tests.test_report_html import HOSTILE, Browser
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run
    from test_report_html import HOSTILE, Browser

WIDTH = 1280


def test_every_table_fits_its_card_at_1280_px(tmp_path):
    page = write_html(make_run(tmp_path / "runs", HOSTILE, counts=True), tmp_path / "report.html")
    (tmp_path / "browser").mkdir()
    browser = Browser(tmp_path / "browser", width=WIDTH)
    try:
        assert browser.load(page) == []
        found = json.loads(browser.evaluate("""JSON.stringify({
            page: document.documentElement.scrollWidth,
            tables: [...document.querySelectorAll('section table')].map(t => {
                const card = t.closest('section'), pad = parseFloat(getComputedStyle(card).paddingRight);
                return {section: card.id, columns: t.rows[0].cells.length,
                        right: t.getBoundingClientRect().right,
                        card_right: card.getBoundingClientRect().right - pad, card_scroll: card.scrollWidth,
                        card_width: card.clientWidth};
            })})"""))
    finally:
        browser.close()
    rules = [t for t in found["tables"] if t["section"] == "rules"]
    assert rules and rules[0]["columns"] == 10, found  # the widest table: scored against references
    over = [t for t in found["tables"] if t["right"] > t["card_right"] + 0.5 or t["card_scroll"] > t["card_width"]]
    assert not over, f"tables past their card's edge at {WIDTH} px: {over}"
    assert found["page"] <= WIDTH, found
