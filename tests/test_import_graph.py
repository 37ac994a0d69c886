"""surfmap/ and learn/ import downward only: no module imports, even late inside a function, a module that
imports it back (tests/_import_graph.py reads the sources; nothing is imported)."""

from pathlib import Path

from _import_graph import cycles, import_graph

ROOT = Path(__file__).resolve().parents[1]



def test_import_graph_has_no_cycle():
    found = cycles(import_graph(ROOT, ["surfmap", "learn"]))
    assert found == [], f"import cycles: {found}; import the lower module from the higher one only"


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_import_graph_finds_late_and_relative_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from pkg import c\n",
        "pkg/c.py": "from . import a\nimport numpy\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\nfrom .sub.e import y\n",
        "pkg/sub/__init__.py": "from .. import d\n",
        "pkg/sub/e.py": "from ..c import z\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.sub.e"} and graph["pkg.sub"] == {"pkg.d"} and graph["pkg.sub.e"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_import_graph_without_cycle(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "import os\n"})
    assert cycles(import_graph(tmp_path, ["pkg"])) == []
