"""The "segment your micrograph" view (:class:`hrtem_tl.segment_app.SegmentApp`) without a browser.

Uploads are set as the FileUpload's value (what the browser sends) and the Segment
button is clicked in Python. The model is :func:`hrtem_testutils.train_disk_model`
(30 steps on disks at 2 Å/px); the files are disk scenes at 1 Å/px, as in
test_segment.py, so the table is checked against the known disks.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from datetime import datetime, timezone

import numpy as np
import pytest
import tifffile

from hrtem_testutils import disk_scene, set_torch_threads, train_disk_model, write_tiff

FILE_PIXEL = 1.0  # [Å]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    train_disk_model(root / "disks")
    return root


def _only_models(monkeypatch, tmp_path, root):
    from hrtem_tl import models

    monkeypatch.setenv("HRTEM_TL_MODELS", str(root))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(models, "REPO_MODELS", tmp_path / "repo")


@pytest.fixture
def app(models_root, monkeypatch, tmp_path):
    from hrtem_tl.segment_app import SegmentApp

    set_torch_threads()
    _only_models(monkeypatch, tmp_path, models_root)
    return SegmentApp()


def upload(app, name: str, data: bytes) -> None:
    """Set the upload as the browser would and click Segment."""
    app.upload.value = ({"name": name, "type": "", "size": len(data), "content": memoryview(data),
                         "last_modified": datetime.now(timezone.utc)},)
    app.button.click()


def tiff_bytes(tmp_path, image, **kwargs) -> bytes:
    return write_tiff(tmp_path / "scene.tif", image, **kwargs).read_bytes()


def table_rows(app) -> list[list[float]]:
    body = re.search(r"<tbody>(.*)</tbody>", app.table.value).group(1)
    return [[float(c) for c in re.findall(r"<td>([^<]*)</td>", row)] for row in re.findall(r"<tr>(.*?)</tr>", body)]


def download(app, suffix: str) -> bytes:
    href = re.search(rf"download='[^']*{re.escape(suffix)}' href='data:[^;]+;base64,([^']*)'", app.downloads.value)
    return base64.b64decode(href.group(1))


def test_upload_segments_to_the_known_disks_and_offers_downloads(app, tmp_path):
    image, mask, areas = disk_scene(256, 7, 12, 24, gap=16)
    upload(app, "scene.tif", tiff_bytes(tmp_path, image))
    assert app.status.value == ""
    assert app.summary.value.startswith(f"scene.tif: {len(areas)} particles, ") and "1 Å/px" in app.summary.value
    rows = table_rows(app)
    assert len(rows) == len(areas)
    expected = np.sort(np.array(areas) * (FILE_PIXEL / 10) ** 2)  # [nm²]
    assert np.allclose(np.sort([r[1] for r in rows]), expected, rtol=0.3)  # the 30-step model's boundaries
    assert app.overlay.value[:8] == b"\x89PNG\r\n\x1a\n"
    with tifffile.TiffFile(io.BytesIO(download(app, "scene_mask.tif"))) as tif:
        got = tif.asarray()
        assert tif.imagej_metadata["unit"] == "nm"
    assert got.shape == image.shape and set(np.unique(got)) <= {0, 255}
    assert 2 * ((got > 0) & (mask > 0)).sum() / ((got > 0).sum() + mask.sum()) > 0.8
    table = list(csv.DictReader(io.StringIO(download(app, "scene_particles.csv").decode())))
    assert [round(float(r["area_nm2"]), 2) for r in table] == [r[1] for r in rows]
    assert [round(float(r["centroid_x_nm"]), 2) for r in table] == [r[3] for r in rows]


def test_bad_files_get_one_line_and_the_next_upload_works(app, tmp_path):
    from PIL import Image

    image, _, areas = disk_scene(256, 8, 12, 24, gap=16)
    app.button.click()
    assert "Choose a file" in app.status.value
    rgb = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(rgb, format="png")
    stack = io.BytesIO()
    tifffile.imwrite(stack, np.stack([image] * 3), imagej=True, resolution=(10, 10), metadata={"unit": "nm", "axes": "ZYX"})
    plain = io.BytesIO()
    tifffile.imwrite(plain, image)
    bad = {"junk.mrc": (b"not an mrc file" * 20, "unreadable"), "rgb.png": (rgb.getvalue(), "colour"),
           "stack.tif": (stack.getvalue(), "stack of 3 images"),
           "small.tif": (tiff_bytes(tmp_path, image[:100, :100]), "smaller than the model's field"),
           "plain.tif": (plain.getvalue(), "no length calibration"), "notes.txt": (b"hello", "unknown file type")}
    for name, (data, problem) in bad.items():
        upload(app, name, data)
        line = html.unescape(app.status.value)
        assert line.startswith("<b>error:</b> ") and "\n" not in line, line
        assert f"{name}: " in line and problem in line, line
        assert "hrtem-tl-upload-" not in line  # the temporary folder is not shown
        assert app.results.children == () and not app.button.disabled
    app.pixel_size.value = FILE_PIXEL  # the override: the uncalibrated file now segments
    upload(app, "plain.tif", plain.getvalue())
    assert app.status.value == "" and len(table_rows(app)) == len(areas)
    app.pixel_size.value = 0.0
    upload(app, "scene.tif", tiff_bytes(tmp_path, image))
    assert app.status.value == "" and len(table_rows(app)) == len(areas)


def test_no_model_gives_one_line_on_how_to_get_one(monkeypatch, tmp_path):
    from hrtem_tl.segment_app import SegmentApp

    _only_models(monkeypatch, tmp_path, tmp_path / "none")
    app = SegmentApp()
    (status,) = app.widget.children
    assert "export-model" in status.value and "finetune" in status.value and "\n" not in status.value


def test_the_committed_voila_app_notebook_holds_no_outputs():
    """Voila executes widgets/app.ipynb itself; saved widget views would point at widget
    models of a kernel long gone ("widget model not found" in the browser)."""
    import json
    from pathlib import Path

    notebook = json.loads((Path(__file__).resolve().parents[1] / "widgets" / "app.ipynb").read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") for c in code)
    assert "widgets" not in notebook.get("metadata", {})  # no saved widget state either
