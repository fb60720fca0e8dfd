"""Jupyter Book 2 builds the same site as mystmd: ``SITE_ENGINE=jupyter-book scripts/build-site.sh``
gives the same pages from the fixture project and our template, byte for byte except the content
hashes in the names of downloadable sources (``build/NAME-HASH.ipynb``), which depend on the folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def _unhashed(page: Path) -> str:
    return re.sub(r"build/([\w.-]+)-[0-9a-f]{32}\.", r"build/\1-HASH.", page.read_text())


def test_jupyter_book_builds_the_same_pages(built_site, tmp_path):
    project = tmp_path / "mini"
    shutil.copytree(built_site.parents[1], project, ignore=shutil.ignore_patterns("_build"))
    result = subprocess.run([str(ROOT / "scripts" / "build-site.sh"), str(project)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "SITE_ENGINE": "jupyter-book"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Building with jupyter-book build --html (v2." in result.stdout
    ours = project / "_build" / "html"
    pages = sorted(p.name for p in built_site.glob("*.html"))
    assert pages and pages == sorted(p.name for p in ours.glob("*.html"))
    differ = [name for name in pages if _unhashed(ours / name) != _unhashed(built_site / name)]
    assert not differ, f"pages that differ between mystmd and Jupyter Book: {differ}"


def test_an_unknown_engine_is_refused(tmp_path):
    result = subprocess.run([str(ROOT / "scripts" / "build-site.sh"), str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "SITE_ENGINE": "sphinx"})
    assert result.returncode == 2 and "SITE_ENGINE must be mystmd or jupyter-book" in result.stderr
