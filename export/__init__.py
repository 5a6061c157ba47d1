"""Build side: a trained run as a validated fp32 ONNX bundle (needs the build extra)."""
