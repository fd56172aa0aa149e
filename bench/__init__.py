"""``python -m bench``: measurements of this project on the machine it runs on, written to ``docs/bench.json``.

Each section is a module with ``run(args) -> dict`` (and optionally
``add_arguments(group)``), registered in ``bench.__main__.SECTIONS``.
"""
