"""Real public series for the series family's tests (import with ``from series_fixtures import``).

pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path`` (there is no
``tests/__init__.py``), so test modules import this file by its bare name.
"""

from __future__ import annotations

import csv
from pathlib import Path


def write_co2_csv(path: str | Path) -> Path:
    """Write statsmodels' weekly Mauna Loa CO2 series (March 1958 - December 2001, 2284 weeks,
    ppm) to ``path`` as a CSV with columns ``date,co2``; its 59 missing weeks are filled by linear
    interpolation. Needs statsmodels (the ``dev`` extra); returns the path."""
    import statsmodels.api as sm

    data = sm.datasets.co2.load_pandas().data
    co2 = data["co2"].interpolate(method="linear")
    assert not co2.isna().any(), "co2: a missing value at an end of the series"
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "co2"])
        for date, value in zip(co2.index, co2.to_numpy(), strict=True):
            writer.writerow([date.strftime("%Y-%m-%d"), repr(float(value))])
    return path
