"""`python -m bench [NAME ...]`: run the benchmarks, print their figures, rewrite docs/benchmarks.md."""
import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import bench
from bench.report import DOCUMENT, write_document


def discover():
    """Every module of this package that defines run(), by name."""
    found = {}
    for module in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"bench.{module.name}")
        if callable(getattr(loaded, "run", None)):
            found[module.name] = loaded
    return found


def main(argv=None):
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(available)})")
    parser.add_argument("--output", type=Path, default=DOCUMENT, help="the markdown file to rewrite")
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    options = parser.parse_args(argv)
    unknown = set(options.names) - set(available)
    if unknown:
        parser.error(f"no benchmark named {', '.join(sorted(unknown))}")
    results = {}
    for name in options.names or available:
        print(f"== {name}: {available[name].TITLE}", flush=True)
        result = results[name] = available[name].run()
        for figure, value in result.figures.items():
            print(f"  {figure}: {value}")
    if not options.no_write:
        print(f"wrote {write_document(results, options.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
