"""Build side: pretrained weights, training and ONNX export (needs the build extra)."""
