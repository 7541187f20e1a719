import subprocess
import sys


def test_importing_core_loads_neither_torch_nor_transformers():
    code = (
        "import sys, hardmine.core, hardmine.selfcheck, hardmine.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'deepspeed') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_core_imports_only_numpy_and_stdlib():
    code = (
        "import sys; before = set(sys.modules); import hardmine.core; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "std = set(sys.stdlib_module_names); "
        "print(sorted(m for m in new if m not in std and m not in ('hardmine', 'numpy') and not m.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
