"""Plotting setup shared by every module that draws a PNG (data card, training curves, eval reports, load test)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend: no display is needed and none is opened, on a server or CI.

    Imported on first use, so modules that may plot stay cheap to import.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
