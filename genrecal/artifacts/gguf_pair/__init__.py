"""The GGUF pair (model.gguf + mmproj.gguf) as both sides see it: `genrecal.export.gguf` writes it,
`genrecal.runtimes.llamacpp` runs it, and both import what they share from here (runtimes/ imports
nothing from export/: a device runs a pair without the exporter's code or its torch/transformers).

    layout.py     file names, manifest `extra` keys, the pair's errors
    prompt.py     PromptFormat: chat template + image sizing + image layout, replayed like the HF processor
    validate.py   every key and tensor llama.cpp dereferences, checked with gguf-py before loading
    llama_log.py  llama.cpp / libmtmd log capture, and the missing-bindings message

A leaf: imports only genrecal.errors and genrecal.images; importing it loads neither torch nor llama.cpp.
"""
