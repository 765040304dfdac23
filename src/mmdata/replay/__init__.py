"""Get recorded days out: notebook loaders, the book at any moment, Parquet export.

``mmdata.open_day(path)`` and ``mmdata.open_data(root)`` are the entry points
(docs/notebook.md has a worked example).
"""

from mmdata.replay.data import Data, open_data
from mmdata.replay.day import BookView, Day, open_day
from mmdata.replay.tables import DataWarning

__all__ = ["BookView", "Data", "DataWarning", "Day", "open_data", "open_day"]
