"""Session options as onnxruntime receives them (a real session on a one-node graph)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ticor.errors import UsageError
from ticor.kernels import FLOAT, one_node_model
from ticor.sessions import SessionConfig, create_session

SPIN = {"intra": "session.intra_op.allow_spinning", "inter": "session.inter_op.allow_spinning"}


def _session(tmp_path: Path, config: SessionConfig) -> Any:
    graph = tmp_path / "relu.onnx"
    graph.write_bytes(one_node_model("Relu", [("x", FLOAT, [1, 3])], ("y", FLOAT, [1, 3])))
    return create_session(graph, hashlib.sha256(graph.read_bytes()).hexdigest(), config)


def test_worker_threads_do_not_spin_unless_asked(tmp_path: Path) -> None:
    """The runtime's default: no spin-waiting in either pool (three sessions' spinning pools take
    the cores from each other); ``spinning=True`` gives onnxruntime's own behaviour back."""
    for spinning, want in ((False, "0"), (True, "1")):
        sess = _session(tmp_path, SessionConfig(intra_op_threads=2, inter_op_threads=2, spinning=spinning))
        opts = sess.get_session_options()
        assert {k: opts.get_session_config_entry(v) for k, v in SPIN.items()} == {"intra": want, "inter": want}
        assert opts.intra_op_num_threads == 2
        y = sess.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})[0]
        np.testing.assert_array_equal(y, [[0.0, 0.0, 2.0]])
    assert SessionConfig().spinning is False


def test_spinning_must_be_a_bool() -> None:
    with pytest.raises(UsageError, match="spinning must be True or False"):
        SessionConfig(spinning="no")  # type: ignore[arg-type]
