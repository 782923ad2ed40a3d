"""The device steps of an Edge-LLM bundle (torch-free; run.sh calls them on the Jetson).

    python -m genrecal.export.edgellm.device_cli plan ARTIFACT --profile jetson-orin-nano   # the build lines
    python -m genrecal.export.edgellm.device_cli compare ARTIFACT                           # exit 1: PARITY FAILED
    python -m genrecal.export.edgellm.device_cli record ARTIFACT --profile jetson-orin-nano --json results/x.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrecal.errors import GenrecalError
from genrecal.export.edgellm.device import manifest_model, plan_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m genrecal.export.edgellm.device_cli", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("plan", "compare", "record"))
    p.add_argument("artifact", type=Path, help="the edgellm-* artifact dir")
    p.add_argument("--profile", default="jetson-orin-nano", help="device profile (genrecal-bench --profile)")
    p.add_argument("--json", type=Path, help="record: where to write the genrecal-bench latency result")
    p.add_argument("--label", help="record: the result's label")
    args = p.parse_args(argv)
    try:
        if args.what == "plan":
            plan = plan_for(manifest_model(args.artifact), args.profile)
            print("\n".join([*plan["commands"].values(), *(f"# warning: {w}" for w in plan["warnings"])]))
            return 0
        if args.what == "compare":
            from genrecal.export.edgellm.parity import compare_files, format_parity

            result = compare_files(args.artifact)
            print(format_parity(result))
            return 0 if result["passed"] else 1
        from genrecal.export.edgellm.timing import write_record

        path = write_record(args.artifact, args.profile, args.json, args.label)
        print(f"latency record: {path}")
        return 0
    except (GenrecalError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
