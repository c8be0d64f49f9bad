"""`import dlkit` stays light."""

import subprocess
import sys


def test_import_dlkit_is_light():
    code = (
        "import sys, dlkit, dlkit.train, dlkit.data; "
        "heavy = [m for m in ('tensorflow', 'tensorflow_datasets', 'grain', 'matplotlib') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
