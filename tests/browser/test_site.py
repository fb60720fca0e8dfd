"""Browser tests of the offline static site (site/template) on a fixture project.

Run with ``pytest -m browser tests/browser``. They need node (for the build)
and Debian's /usr/bin/chromium (skipped without it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PAGES = ["index.html", "methods.html", "explorer.html", "appendix.html"]


def wait_for_plot(page, div_id: str):
    page.wait_for_selector(f"#{div_id}.js-plotly-plot svg.main-svg", timeout=15_000)


def plot_value(page, div_id: str, expr: str):
    return page.evaluate(f"() => {{ const gd = document.getElementById('{div_id}'); return {expr}; }}")


# ---------------------------------------------------------------- build output


def test_build_writes_every_page_and_local_assets(built_site):
    for name in PAGES:
        assert (built_site / name).is_file(), name
    for asset in ["assets/plotly.min.js", "assets/site.css", "assets/site.js", "assets/katex/katex.min.css"]:
        assert (built_site / asset).is_file(), asset
    assert list((built_site / "assets/katex/fonts").glob("KaTeX_Main-Regular.woff2"))
    # The large explorer output (> 25,000 characters) came from a separate
    # file on mystmd's content server and is inlined in the page.
    index = (built_site / "index.html").read_text()
    assert 'id="demo-data"' in index
    assert "Plotly.react" in index


def test_pages_reference_no_remote_resources(built_site):
    pattern = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for name in PAGES:
        html = (built_site / name).read_text()
        assert not pattern.search(html), f"{name} loads something from another host"


# ---------------------------------------------------------------- interactive figures


def test_explorer_renders_and_select_redraws(loaded_pages, artifacts_dir):
    rec = loaded_pages["index.html"]
    page = rec.page
    wait_for_plot(page, "demo-plot")
    assert plot_value(page, "demo-plot", "gd.data[0].z[0][0]") == pytest.approx(0.125)
    assert "dataset A" in page.text_content("#demo-plot .gtitle")

    page.select_option("#demo-select", "B")
    page.wait_for_function(
        "() => document.getElementById('demo-plot').data[0].z[0][0] === 0.875", timeout=10_000
    )
    assert "dataset B" in page.text_content("#demo-plot .gtitle")
    assert page.locator("#demo-plot svg.main-svg .heatmaplayer image, #demo-plot svg.main-svg .hm").count() > 0
    page.screenshot(path=str(artifacts_dir / "site-index.png"), full_page=True)
    assert rec.errors == []


def test_plain_plotly_figure_output(loaded_pages):
    page = loaded_pages["index.html"].page
    target = page.locator("#fig-plain .output-plotly .plotly-target")
    target.locator("svg.main-svg").first.wait_for(timeout=15_000)
    div_id = target.get_attribute("id")
    assert plot_value(page, div_id, "gd.data[0].y") == [0.81, 0.88, 0.92, 0.95, 0.96]
    assert page.locator("#fig-plain .scatterlayer .trace").count() == 1


def test_small_inline_explorer_and_png_output(loaded_pages):
    page = loaded_pages["methods.html"].page
    wait_for_plot(page, "small-plot")
    page.select_option("#small-select", "high")
    page.wait_for_function("() => document.getElementById('small-plot').data[0].z[0][0] === 0.9")

    page = loaded_pages["index.html"].page
    img = page.locator("#fig-static img.output-image")
    img.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.querySelector('#fig-static img.output-image'); return i && i.complete && i.naturalWidth > 0; }"
    )


def test_notebook_page_shows_code_outputs_and_honours_tags(loaded_pages):
    page = loaded_pages["explorer.html"].page
    wait_for_plot(page, "demo-plot")
    assert page.locator("pre.code-block code.language-python").count() >= 5
    assert "text output: 42" in page.inner_text(".output-stream >> nth=0")
    # remove-input: output kept, code gone; hide-input: code folded
    assert page.locator("table.removed-input-table").count() == 1
    assert "removed-input-table" not in " ".join(page.locator("pre.code-block").all_inner_texts())
    assert page.locator("details.hidden-code").count() == 1
    assert page.locator("a[download]").get_attribute("href").endswith(".ipynb")


# ---------------------------------------------------------------- scholarly content


def test_math_is_rendered_with_local_katex(loaded_pages):
    page = loaded_pages["index.html"].page
    assert page.locator("#eq-loss .katex-display").count() == 1
    assert page.inner_text("#eq-loss .eq-number") == "(1)"
    assert page.locator(".math-inline .katex").count() >= 1
    page.evaluate("() => document.fonts.ready")
    assert page.evaluate("() => document.fonts.check('16px KaTeX_Main')")


def test_citations_bibliography_and_cross_references(loaded_pages):
    page = loaded_pages["index.html"].page
    cite = page.locator('a.cite[href="#cite-ronneberger2015"]')
    assert cite.count() == 1
    assert "Ronneberger" in cite.inner_text()
    assert "U-Net" in page.inner_text("#references #cite-ronneberger2015")
    assert page.locator("#references li").count() == 2
    # numbered figures and their references
    assert page.text_content("#fig-demo figcaption .caption-number") == "Figure\u00a01:"
    assert page.inner_text('a.xref[href="#fig-demo"]') == "Figure\u00a01"
    assert page.inner_text('a.xref[href="#eq-loss"]') == "(1)"
    assert page.locator('a.xref[href="methods.html#sec-methods"]').count() == 1
    # footnote
    assert page.locator('sup.footnote-ref a[href="#fn-fn"]').count() == 1

    page = loaded_pages["methods.html"].page
    assert page.locator('a.xref[href="index.html#eq-loss"]').count() == 1
    assert page.locator('a[href="appendix.html"]').count() == 1


def test_navigation_sidebar_and_pager(loaded_pages):
    page = loaded_pages["methods.html"].page
    nav = page.locator("#sidebar")
    hrefs = nav.locator(".nav-pages > li > a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert hrefs == ["index.html", "methods.html", "explorer.html"]  # the hidden page stays out
    assert nav.locator("li.active > a").inner_text() == "Methods"
    assert nav.locator(".nav-part").text_content() == "Notebooks"
    assert page.locator(".pager .prev").get_attribute("href") == "index.html"
    assert page.locator(".pager .next").get_attribute("href") == "explorer.html"


# ---------------------------------------------------------------- theme and layout


def background(page) -> str:
    return page.evaluate("() => getComputedStyle(document.body).backgroundColor")


def test_dark_mode_follows_system_and_toggle(open_page, artifacts_dir):
    rec = open_page("index.html", color_scheme="light")
    page = rec.page
    light_bg = background(page)
    page.click(".theme-toggle")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    dark_bg = background(page)
    assert dark_bg != light_bg
    page.reload()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    assert background(page) == dark_bg
    wait_for_plot(page, "demo-plot")
    page.locator("#fig-plain .plotly-target svg.main-svg").first.wait_for(timeout=15_000)
    font = "() => document.querySelector('#fig-plain .plotly-target')._fullLayout.font.color"
    paper = "() => document.querySelector('#fig-plain .plotly-target')._fullLayout.paper_bgcolor"
    assert page.evaluate(font) == "#e3e7eb" and page.evaluate(paper).replace(" ", "") == "rgba(0,0,0,0)"  # figure follows the theme
    page.screenshot(path=str(artifacts_dir / "site-index-dark.png"))
    page.click(".theme-toggle")
    assert background(page) == light_bg
    assert page.evaluate(font) != "#e3e7eb"

    system_dark = open_page("index.html", color_scheme="dark").page
    assert background(system_dark) == dark_bg
    assert rec.errors == []


CONTRAST_JS = """() => {
  // WCAG contrast of an inline code element inside an output panel, against its own background
  const box = document.createElement('div');
  box.className = 'output-html';
  box.innerHTML = '<p>see <code>hrtem-tl study</code></p>';
  document.querySelector('main').appendChild(box);
  const code = box.querySelector('code');
  const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const v = rgb(c).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const style = getComputedStyle(code);
  const a = lum(style.color), b = lum(style.backgroundColor);
  box.remove();
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_inline_code_in_output_panels_is_readable(open_page, scheme):
    page = open_page("index.html", color_scheme=scheme).page
    assert page.evaluate(CONTRAST_JS) >= 4.5


def test_phone_layout_has_toggleable_navigation(open_page, artifacts_dir):
    page = open_page(
        "index.html", viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    ).page
    wait_for_plot(page, "demo-plot")
    sidebar = page.locator("#sidebar")
    assert sidebar.bounding_box()["x"] < 0  # off-canvas
    # nothing wider than the screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts_dir / "site-index-phone.png"))
    page.click(".nav-toggle")
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    page.screenshot(path=str(artifacts_dir / "site-index-phone-nav.png"))


# ---------------------------------------------------------------- offline


@pytest.mark.parametrize("name", PAGES)
def test_no_request_leaves_the_host(loaded_pages, name):
    rec = loaded_pages[name]
    rec.page.mouse.wheel(0, 20_000)  # bring lazy content into view
    rec.page.wait_for_timeout(300)
    assert len(rec.requests) > 3
    assert rec.external_requests() == []
    assert rec.errors == []


AXE = Path(__file__).resolve().parents[2] / "site" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.mark.skipif(not AXE.exists(), reason="npm axe-core is not installed (scripts/setup.sh installs site/)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["index.html", "methods.html", "explorer.html", "appendix.html"])
def test_axe_finds_no_serious_accessibility_violation(open_page, name, scheme):
    page = open_page(name, color_scheme=scheme).page
    page.wait_for_timeout(500)  # figures drawn, tab stops added
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => (await axe.run()).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '))""")
    assert found == [], found


# ---------------------------------------------------------------- print


def test_the_whole_site_prints_to_one_pdf_linked_from_every_page(built_site):
    """scripts/site_pdf.py (run by build-site.sh): the toc's pages in order, one bookmark each,
    their figures drawn (the explorer's axis ticks are text in the PDF), a link on every page."""
    import json

    from pypdf import PdfReader

    order = json.loads((built_site / "pages.json").read_text())
    assert [p["href"] for p in order][:2] == ["index.html", "methods.html"]
    pdf = PdfReader(built_site / "paper.pdf")
    marks = [(m.title, pdf.get_destination_page_number(m)) for m in pdf.outline]
    assert [t for t, _ in marks] == [p["title"] for p in order]
    starts = [n for _, n in marks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts) and len(pdf.pages) >= len(order)
    for (title, start), entry in zip(marks, order):
        first = " ".join(pdf.pages[start].extract_text().split())
        assert " ".join(title.split()) in first, (title, first[:200])
        assert 'class="pdf-link" href="paper.pdf"' in (built_site / entry["href"]).read_text(), entry["href"]
    uris, jumps = [], set()
    page_of = {p.indirect_reference.idnum: n for n, p in enumerate(pdf.pages)}
    for n, page in enumerate(pdf.pages):
        for ref in page.get("/Annots") or []:
            link = ref.get_object()
            if isinstance(link.get("/Dest"), list):  # an explicit jump: [page, /Fit]
                jumps.add((n, page_of.get(link["/Dest"][0].idnum)))
            uris += [str(link["/A"]["/URI"])] if "/A" in link and "/URI" in link["/A"] else []
    own = {start: next((s for s in sorted(starts, reverse=True) if s <= start), 0) for start in range(len(pdf.pages))}
    assert any(to in starts and own[n] != to for n, to in jumps), jumps  # a page's link to another printed page
    assert not [u for u in uris if "127.0.0.1" in u or "localhost" in u], uris  # no dead temporary-server links
    text = " ".join(p.extract_text() for p in pdf.pages)
    assert "dataset A" in text  # the demo explorer's Plotly title: drawn before printing
    assert "</label>" in text  # code wraps in print instead of running off the page
