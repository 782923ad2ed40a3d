#!/usr/bin/env bash
# bash scripts/setup.sh   -- creates .venv and installs genrecal with every extra (CPU machine, Python 3.11)
# torch/torchvision are pinned to the builds this machine kind carries on local disk; llama-cpp-python
# compiles once (~12 min on 2 cores) and pip's cache keeps the wheel for later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[all]'
