"""Benchmarks that print figures and write docs/benchmarks.md (`make bench`, i.e. `python -m bench`).

Not timed tests: nothing here passes or fails the build. To add one, drop a module in this
package that defines

    TITLE = "What is measured"
    def run() -> bench.report.Result: ...

`python -m bench` finds every module with a `run`, runs them in name order, prints each
result's figures and rewrites its section of docs/benchmarks.md under the machine's facts.
"""
