"""The exporter's errors, under one root: `python -m exporter` reports any of them as one line and exit 1."""
from __future__ import annotations


class ExporterError(Exception):
    """Something the exporter cannot do with the weights, data or model it was given (the message says what)."""
