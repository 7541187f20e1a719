import subprocess
import sys


def test_inspect_needs_no_model_stack():
    code = (
        "import sys, hardmine.inspect, hardmine.inspect.command, hardmine.inspect.plot, hardmine.inspect.sheet; "
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'deepspeed', 'hardmine.train', 'hardmine.data') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
