"""Research harnesses: the quality benchmarks (easy-vqa, multi-object scenes), distillation at real shapes,
and genrecal's exporters beside the peers' own. They use the whole package; nothing in it uses them.

`genrecal-experiments <command>` runs them (experiments/cli.py), and so does `genrecal-bench <command>`
through the `genrecal.bench_commands` entry point in pyproject.toml. Their committed results are in
benchmarks/results/.
"""
