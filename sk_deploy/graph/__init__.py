"""PyTorch -> ONNX: export (export.py), graph rewrites (passes/), parity against PyTorch (verify.py)."""
