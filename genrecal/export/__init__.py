"""Export a clean student for edge devices (`genrecal-export`, see cli.py).

    hf.py          the clean HF student every export reads (refuses pickle / training state)
    targets.py     cpu / phone / jetson as data: which artifacts each gets
    run.py         one export run: refusals first, then each artifact dir atomically, a summary
    onnx/          graphs (onnx-community layout), precisions, parity vs PyTorch, genai config
    gguf/          llama.cpp GGUF pairs (text model + mmproj)
    tensorrt.py    the Jetson build plan, engine building and the engine compatibility check
    layout.py      every file and dir name an export writes
"""
