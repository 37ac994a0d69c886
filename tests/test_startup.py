"""Fast start: ``import surfmap`` and the commands' ``--help`` import no heavy dependency (checked on the modules
a fresh interpreter holds, not on wall time)."""

import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "numba", "torch", "matplotlib", "nibabel")


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("code", [
    "import surfmap",
    "import surfmap.cli; surfmap.cli.build_parser().format_help()",
    "import learn.cli",
    "import learn.surface.cli; learn.surface.cli._parser().format_help()",
], ids=["import-surfmap", "surfmap-help", "surfmap-learn-help", "surfmap-learn-surface-help"])
def test_startup_imports_no_heavy_dependency(code):
    heavy = sorted(m for m in _modules_after(code) if m.split(".")[0] in HEAVY)
    assert heavy == [], f"{code!r} imports {heavy[:5]}; import them inside the functions that need them"


def test_distortion_stays_the_function_after_its_module_is_imported():
    code = ("import surfmap, surfmap.distortion as d; from surfmap.distortion import Distortion; "
            "import surfmap.batch; assert callable(surfmap.distortion) and d is surfmap.distortion; "
            "assert surfmap.distortion.__module__ == 'surfmap.distortion'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
