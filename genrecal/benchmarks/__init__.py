"""On-device benchmarks over genrecal.runtimes: latency, accuracy, device profiles, bundles, reports.

`genrecal-bench` (benchmarks/cli.py) is the entry point; every result is a JSON record (results.py)
that `genrecal-bench report` merges, wherever it was measured.
"""
