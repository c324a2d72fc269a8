"""The engine never imports Streamlit, ui/ or app_pages/ (the layer rule of ../shared/STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("streamlit", "ui", "app_pages")


def test_engine_sources_import_no_streamlit_ui_or_pages() -> None:
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list((ROOT / "engine").rglob("*.py"))) >= 5


def test_importing_every_engine_module_loads_no_streamlit() -> None:
    modules = [f"engine.{p.stem}" for p in (ROOT / "engine").glob("*.py") if p.stem not in ("__init__", "__main__")]
    code = f"import sys; import {', '.join(modules)}; print(any(m.split('.')[0] == 'streamlit' for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
