"""The "segment your micrograph" view of the Voila app: upload, segment, look, download.

One uploaded file is written to a temporary folder (under its own name, so its suffix
picks the reader) and segmented by :func:`hrtem_tl.segment.segment_file` with a model
from :func:`hrtem_tl.models.list_models` (``$HRTEM_TL_MODELS``, the user folder, the
shipped ``models/``). The view shows the overlay (particle outlines in red), the
particle table (nm², nm) and :func:`~hrtem_tl.segment.summary_line`; the mask TIFF
and the particle CSV are offered as ``data:`` links, so no server endpoint is needed.
A file that cannot be segmented gets one line of error and the view stays usable.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

import ipywidgets as w

from .models import list_models, load_model, user_models_dir
from .segment import particle_table, segment_file, summary_line

ACCEPT = ".tif,.tiff,.png,.dm3,.dm4,.mrc,.emd,.ser"
MIME = {"mask": "image/tiff", "table": "text/csv"}


def no_model_line() -> str:
    """How to get a model, for a view that found none."""
    return ("No segmentation model is installed: make one with 'hrtem-tl finetune IMAGES --masks MASKS --from MODEL', "
            "or export a study checkpoint with 'hrtem-tl export-model CHECKPOINT "
            f"{user_models_dir()}/NAME' (or point $HRTEM_TL_MODELS at a model folder's parent), then reload this page.")


class SegmentApp:
    """Upload, model, pixel-size override [Å] (0: the file's calibration), Segment button and results.

    ``widget`` is what the notebook displays; without a model it is one line on how to get one.
    """

    def __init__(self):
        self.models = list_models()
        self._loaded: dict[str, tuple] = {}
        self.status = w.HTML()
        self.widget = w.VBox([self.status])
        self.widget.add_class("hrtem-segment-app")
        if not self.models:
            self.status.value = f"<b>{html.escape(no_model_line())}</b>"
            return
        self.upload = w.FileUpload(accept=ACCEPT, multiple=False, description="micrograph")
        self.model = w.Dropdown(options=[(f"{c.get('name', f.name)} ({c['pixel_size']:.3g} Å/px)", str(f))
                                         for f, c in self.models], description="model")
        self.pixel_size = w.FloatText(value=0.0, description="pixel size (Å)", style={"description_width": "initial"},
                                      tooltip="0: use the file's calibration")
        self.button = w.Button(description="Segment", button_style="primary")
        self.summary = w.HTML()
        self.overlay = w.Image(format="png", layout={"max_width": "100%", "align_self": "flex-start"})  # not stretched
        self.table = w.HTML()
        self.downloads = w.HTML()
        self.results = w.VBox()
        self.button.on_click(self._clicked)
        hint = w.HTML("<small>pixel size 0: use the file's calibration (a scale is never guessed)</small>")
        self.widget.children = (w.HBox([self.upload, self.model, self.pixel_size, self.button]), hint, self.status,
                                self.results)

    def _clicked(self, _=None) -> None:
        if not self.upload.value:
            self.status.value = "<b>Choose a file first.</b>"
            return
        upload = self.upload.value[0]
        self.segment(upload["name"], bytes(upload["content"]))

    def _model(self, folder: str) -> tuple:
        if folder not in self._loaded:
            self._loaded[folder] = load_model(Path(folder))
        return self._loaded[folder]

    def segment(self, name: str, content: bytes) -> dict | None:
        """Segment the bytes of file ``name`` with the chosen model; show the results or a one-line error.

        Returns :func:`~hrtem_tl.segment.segment_file`'s summary (``None`` on error); its
        ``paths`` are gone with the temporary folder, their contents are in the view.
        """
        name = Path(name).name
        self.button.disabled = True
        self.status.value = f"Segmenting {html.escape(name)} …"
        self.results.children = ()
        try:
            with tempfile.TemporaryDirectory(prefix="hrtem-tl-upload-") as tmp:
                path = Path(tmp) / name
                # InputError and model errors are ValueErrors; torch's out-of-memory error is a RuntimeError
                try:
                    path.write_bytes(content)
                    model, card = self._model(self.model.value)
                    s = segment_file(path, model, card, Path(tmp) / "out", pixel_size=self.pixel_size.value or None)
                except (ValueError, OSError, MemoryError, RuntimeError) as err:
                    self.status.value = f"<b>error:</b> {html.escape(str(err).replace(str(path), name))}"
                    return None
                s = {**s, "file": name}
                self._show(s)
                return s
        finally:
            self.button.disabled = False

    def _show(self, s: dict) -> None:
        """Overlay, table, summary and download links of summary ``s`` (its files still on disk)."""
        paths = s["paths"]
        self.status.value = ""
        self.summary.value = html.escape(summary_line(s).rsplit(" -> ", 1)[0])  # no output folder: downloads instead
        self.overlay.value = paths["overlay"].read_bytes()
        rows = "".join(f"<tr><td>{r['label']}</td><td>{r['area_nm2']:.2f}</td><td>{r['equivalent_diameter_nm']:.2f}</td>"
                       f"<td>{r['centroid_x_nm']:.2f}</td><td>{r['centroid_y_nm']:.2f}</td></tr>"
                       for r in particle_table(s["mask"], s["pixel_size"]))
        self.table.value = ("<style>.hrtem-particles td,.hrtem-particles th{padding:0 .6em;text-align:right}</style>"
                            "<div style='max-height:24em;overflow:auto'><table class='hrtem-particles'><thead><tr>"
                            "<th>#</th><th>area (nm²)</th><th>equivalent diameter (nm)</th><th>centroid x (nm)</th>"
                            f"<th>centroid y (nm)</th></tr></thead><tbody>{rows}</tbody></table></div>")
        self.downloads.value = "download: " + " · ".join(
            f"<a download='{html.escape(paths[k].name)}' href='data:{MIME[k]};base64,"
            f"{base64.b64encode(paths[k].read_bytes()).decode()}'>{label}</a>"
            for k, label in (("mask", "mask (TIFF)"), ("table", "particles (CSV)")))
        self.results.children = (self.summary, self.overlay, self.table, self.downloads)
