"""The site's plotly.js bundle matches the figures the Python package writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly

ROOT = Path(__file__).resolve().parents[1]


def test_cartesian_bundle_is_the_python_packages_plotly_js_version():
    pinned = json.loads((ROOT / "site" / "package.json").read_text())["dependencies"]["plotly.js-cartesian-dist-min"]
    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    version = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", full.read_text()[:500]).group(1)
    assert pinned == version  # figures are written for this plotly.js; the bundle must draw them the same way
