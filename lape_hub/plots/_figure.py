"""What every picture shares: matplotlib (Agg, imported lazily), atomic PNG and data writes.

Each picture module computes its data first (a dataclass with ``to_arrow()``/``to_pandas()``)
and draws it second; :func:`save_picture` writes the PNG and the data beside it (Parquet or
CSV, the same stem), both atomically.

Example::

    >>> import pyarrow as pa, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> data_path(d / "x.png", "csv").name
    'x.csv'
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa
    from matplotlib.figure import Figure

DATA_FORMATS = ("parquet", "csv")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    from lape_hub.errors import require

    matplotlib = require("matplotlib", "plots", purpose="drawing pictures")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def to_pandas(table: "pa.Table") -> "pandas.DataFrame":
    """``table.to_pandas()``, or one line naming the extra when pandas is missing."""
    from lape_hub.errors import require

    require("pandas", "plots", purpose="to_pandas()")
    return table.to_pandas()


def data_path(png: str | os.PathLike, fmt: str = "parquet") -> Path:
    """The data file written beside a picture: same folder and stem, ``.parquet``/``.csv``."""
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data format must be one of {', '.join(DATA_FORMATS)}, not {fmt!r}")
    return Path(png).with_suffix("." + fmt)


def write_table(table: "pa.Table", path: str | os.PathLike) -> Path:
    """Write ``table`` atomically as Parquet or CSV (by the suffix of ``path``)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from lape_hub.atomic import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"{path}: data files end in .parquet or .csv")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)
    return path


def save_picture(fig: "Figure", png: str | os.PathLike, table: "pa.Table | None" = None, *,
                 data_format: str = "parquet", dpi: int = 110) -> tuple[Path, Path | None]:
    """Write ``fig`` to ``png`` and ``table`` beside it; close the figure. Returns both paths."""
    from lape_hub.atomic import atomic_path

    import io

    png = Path(png)
    if png.suffix.lower() != ".png":
        raise ValueError(f"{png}: pictures are written as .png")
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=dpi, format="png", bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    with atomic_path(png) as tmp:
        tmp.write_bytes(_palette_png(buf.getvalue()))
    data = write_table(table, data_path(png, data_format)) if table is not None else None
    return png, data


def _palette_png(data: bytes) -> bytes:
    """The PNG re-encoded with a 256-colour palette (heatmaps have few colours; the file
    shrinks 2-4x). Unchanged when Pillow is missing."""
    import io

    try:
        from PIL import Image
    except ImportError:
        return data
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                 dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
    return out.getvalue()


def label_size(n: int, inches: float) -> float:
    """A font size (points) that fits ``n`` labels along ``inches`` without overlapping."""
    return max(2.5, min(9.0, 0.8 * 72 * inches / max(n, 1)))
