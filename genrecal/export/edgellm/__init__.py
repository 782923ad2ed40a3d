"""`--target jetson` through NVIDIA TensorRT Edge-LLM, what Jetson users run (see docs/edgellm.md).

    genrecal/artifacts/edgellm.py   names of the artifact, the device side, Edge-LLM's families
    env.py        Edge-LLM's exporter in an isolated, cached venv (tensorrt-edgellm pins its own torch)
    export.py     the clean student cast to fp16 + chat template -> Edge-LLM's exporter -> llm/ + visual/
    checks.py     host checks without a GPU: graph I/O, configs, embedding table, preprocessor, sizes
    reference.py  PyTorch greedy tokens + top-k logits for a few image prompts (device parity)
    device.py     torch-free, runs on the Jetson: build commands sized from a profile, parity compare,
                  llm_inference profile -> genrecal-bench latency record
    quantize.py   --precision int4_awq|fp8|int8_sq|nvfp4 through Edge-LLM's quantiser (CUDA only)
"""
