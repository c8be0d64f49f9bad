"""Kept only for pmap_vs_sharded.py's `from timing import time_round_robin`: the one timer is
dlkit.extras.profile.time_round_robin; delete this file once that script imports it from there."""

from dlkit.extras.profile import time_round_robin  # noqa: F401
