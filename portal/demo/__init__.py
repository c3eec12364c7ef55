"""The demo: `make demo` (see __main__.py) and the data `flask --app portal seed-demo` creates (seed.py)."""
