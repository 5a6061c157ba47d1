"""Build side: int8 and fp16 bundles behind an accuracy gate (needs onnx)."""
