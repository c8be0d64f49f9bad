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


def test_import_dlkit_leaves_extras_out_and_plugs_in_the_kernel():
    code = (
        "import sys, dlkit, dlkit.train, dlkit.data; "
        "from dlkit.ops import attention_dispatch as d; "
        "print([m for m in sys.modules if m.startswith('dlkit.extras')], d.pallas_available())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True", out.stdout
