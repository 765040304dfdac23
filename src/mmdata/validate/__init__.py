"""Offline verification: replay captured traffic (later also recorded days) through the sync engines."""

from mmdata.validate.capture import CaptureReport, Problem, SymbolReport, validate_capture

__all__ = ["CaptureReport", "Problem", "SymbolReport", "validate_capture"]
