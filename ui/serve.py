"""Start the app's server with the lab's modules already imported: ``python -m ui.serve [streamlit options]``.

``streamlit run app.py`` imports nothing until the first visitor's page runs, so after every start that
first visitor waits for torch, scikit-learn, plotly and the lab's own modules to be imported (about 5 s on a
2-core machine), and everyone who arrives meanwhile waits with them. This imports them first and then runs
``streamlit run app.py`` in the same process, where the page's imports find them loaded: the server answers
its health check only once they are. ``make run`` and the deploy guide's service start the app this way; the
options are those of ``streamlit run``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import time

import ui


def preload() -> list[str]:
    """Import every module of ``ui`` (and so the engine modules, torch and plotly they use); their names."""
    names = [f"ui.{m.name}" for m in pkgutil.iter_modules(ui.__path__) if m.name != "serve"]
    # Streamlit checks each cached function's settings when it is defined, and says in a warning that no
    # server runs yet; the cache itself is chosen at the first call, inside the server, as usual.
    from streamlit.runtime.caching import cache_data_api  # its logger is set up on import: before we lower it

    quiet = logging.getLogger(cache_data_api.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        quiet.setLevel(level)
    return names


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli

    start = time.perf_counter()
    names = preload()
    print(f"SynthLab: {len(names)} modules imported in {time.perf_counter() - start:.1f} s", flush=True)
    sys.argv = ["streamlit", "run", "app.py", *(sys.argv[1:] if argv is None else argv)]
    sys.exit(cli.main(prog_name="streamlit"))


if __name__ == "__main__":
    main()
