"""Moved to dlkit.extras.plotting; this alias serves experiments/transfer.py until the lead's #14
step updates it, then goes."""

from dlkit.extras.plotting import image_grid, line_plots, pyplot, write_table  # noqa: F401
