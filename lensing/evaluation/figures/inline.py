"""Showing the project's figures inline in a notebook, whatever matplotlib backend is active.

The plot functions build their Figures without pyplot, so no backend knows about them and a
notebook would print ``<Figure size ...>`` for one. ``show`` hands the notebook PNG bytes
instead: they render the same in JupyterLab, in a papermill run and in an HTML export.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from lensing.evaluation.figures.plots import DPI

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_bytes(figure: Figure | str | Path) -> bytes:
    """The PNG of ``figure``: a Figure rendered in memory (as ``plots.save_figure`` renders it),
    or the contents of a PNG file."""
    if isinstance(figure, Figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()
    if isinstance(figure, (str, Path)):
        path = Path(figure)
        if not path.is_file():
            raise FileNotFoundError(f"no figure at {path}; expected a PNG file written by a plot")
        data = path.read_bytes()
        if not data.startswith(PNG_MAGIC):
            raise ValueError(f"{path} is not a PNG file (it starts with {data[:8]!r})")
        return data
    raise TypeError(
        f"show() takes a matplotlib Figure or the path of a PNG file; got {type(figure).__name__}"
    )


def show(figure: Figure | str | Path) -> None:
    """Display ``figure`` (a Figure or a PNG file's path) as an image in the current cell.

    Returns None, so a cell ending in ``show(...)`` prints nothing more.
    """
    from IPython.display import Image, display

    display(Image(data=png_bytes(figure), format="png"))
