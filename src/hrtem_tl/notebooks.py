"""Re-execute the site's notebooks in place so every figure and number is regenerated."""

from __future__ import annotations

import time
from pathlib import Path

DEFAULT_NOTEBOOKS = ("widgets/*.ipynb", "content/*.ipynb")
SKIP = ("widgets/app.ipynb",)  # the Voila app is executed by Voila itself


def find_notebooks(patterns=DEFAULT_NOTEBOOKS, root: Path = Path(".")) -> list[Path]:
    found = [p for pattern in patterns for p in sorted(Path(root).glob(pattern))]
    return [p for p in found if p.as_posix() not in SKIP and ".ipynb_checkpoints" not in p.parts]


def execute(paths: list[Path], timeout: int = 1200) -> list[tuple[Path, float]]:
    """Execute each notebook with its own folder as working directory; returns times [s]."""
    import nbformat
    from nbclient import NotebookClient

    done = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"notebook {path} does not exist")
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)
        done.append((path, time.perf_counter() - start))
    return done
