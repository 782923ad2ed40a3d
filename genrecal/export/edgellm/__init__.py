"""`--target jetson` through NVIDIA TensorRT Edge-LLM, what Jetson users run (see docs/edgellm.md).

    genrecal/artifacts/edgellm.py   names of the artifact, the device side, Edge-LLM's families (torch-free)
    env.py          Edge-LLM's exporter in an isolated, cached venv (tensorrt-edgellm pins its own torch)
    student.py      what the export reads of the clean student: family, chat template
    export.py       the student cast to fp16 + chat template -> Edge-LLM's exporter -> llm/ + visual/ + manifest
    routing.py      which Jetson path a family takes (Edge-LLM, or genrecal's own ONNX + TensorRT plan)
    checks.py       host checks without a GPU: graph I/O, configs, embedding table, preprocessor, grids, INT4
    reference.py    PyTorch greedy tokens + top-k logits for a few image prompts (device parity)
    quantize.py     --precision int4_awq|fp8|int8_sq|nvfp4 through Edge-LLM's quantiser (CUDA only)
    quantize_run.py its child-process entry (run by Edge-LLM's interpreter)
  torch-free, run on the Jetson by the bundle (genrecal/benchmarks/edgellm_bundle.py):
    device.py       llm_build / visual_build / llm_inference lines sized from a device profile
    parity.py       Edge-LLM's output tokens vs the references: PARITY FAILED on a real mismatch
    timing.py       llm_inference's profile -> genrecal-bench's latency record
    device_cli.py   python -m genrecal.export.edgellm.device_cli plan|compare|record
"""
