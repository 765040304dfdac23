"""The recorded-day fixtures (``recorded_data``, ``day_copy``) live in tests/recorded_days.py,
loaded for the whole suite by tests/conftest.py; the helpers are re-exported here."""

from tests.recorded_days import VENUES, only_day, record_days

__all__ = ["VENUES", "only_day", "record_days"]
