"""`import dlkit` stays light, leaves dlkit.extras out and plugs the Pallas backend into ops."""

import subprocess
import sys


def after_import(expression: str) -> str:
    """What `expression` prints in a fresh interpreter after importing dlkit, train and data."""
    code = f"import sys, dlkit, dlkit.train, dlkit.data; print({expression})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_dlkit_is_light():
    heavy = "[m for m in ('tensorflow', 'tensorflow_datasets', 'grain', 'matplotlib') "
    assert after_import(heavy + "if m in sys.modules]") == "[]"


def test_import_dlkit_leaves_extras_out_and_plugs_in_the_kernel():
    extras = "[m for m in sys.modules if m.startswith('dlkit.extras')]"
    assert after_import(extras) == "[]"
    assert after_import("dlkit.ops.attention_dispatch.pallas_available()") == "True"
