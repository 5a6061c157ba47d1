"""The ``ticor`` commands, one module each.

Every module has ``register(subparsers)``, which adds its parser with argparse alone, and
``run(args) -> int``, which does the work. Heavy imports (numpy, onnxruntime, torch, the build
side) happen inside ``run``, after the command has checked that its extra is installed, so
``ticor --version`` and ``ticor --help`` stay instant. Adding a command: a module here with
those two functions, and its name in :data:`COMMANDS`.
"""

COMMANDS = ("data", "train", "export", "quantize", "adapt", "info", "score", "rank", "eval", "bench")
