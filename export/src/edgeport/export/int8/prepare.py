"""The fp32 model every int8 recipe starts from, prepared once per export.

- opset 13 at least: per-channel Q/DQ (the ``axis`` of DequantizeLinear) needs it, and both ONNX
  Runtime's quantizer and NNCF fall back to per-tensor weights below it (files converted from
  Paddle or TensorFlow often use 11 or 12);
- every node named: layers are kept in float by name;
- simplified by onnxslim (constants folded, BatchNormalization fused into convolutions: a file
  from elsewhere may still have them);
- shapes inferred by ONNX Runtime's ``quant_pre_process`` *without* its graph optimizer, which
  would split HardSwish into HardSigmoid and Mul (each convolution then feeds two nodes, its
  output cannot be quantized once, and MobileNetV3 ran 2x slower on ONNX Runtime and brought 28
  reference HardSigmoid kernels to OpenVINO). Its symbolic shape inference gives up on some
  graphs (PP-OCR's detector); ONNX's own shape inference is used then.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeport.export.onnx import save_model
from edgeport.runtime.errors import ExportError

log = logging.getLogger(__name__)

MIN_QUANT_OPSET = 13


def default_opset(model: Any) -> int:
    """The model's ``ai.onnx`` opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def name_nodes(model: Any) -> int:
    """Give every unnamed node a unique name (``<op>_<index>``); returns how many were named."""
    taken = {node.name for node in model.graph.node if node.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        named += 1
    return named


def prepare_fp32(src: Path, dst: Path) -> Path:
    """Write the prepared copy of the fp32 model ``src`` to ``dst`` (see the module doc)."""
    import onnx
    import onnxslim
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = default_opset(model)
    if opset < MIN_QUANT_OPSET:
        log.info("converting %s from opset %d to %d for int8", src.name, opset, MIN_QUANT_OPSET)
        try:
            model = version_converter.convert_version(model, MIN_QUANT_OPSET)
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise ExportError(
                f"cannot convert {src.name} from opset {opset} to {MIN_QUANT_OPSET}, which "
                f"per-channel int8 needs: {exc}; convert it with a newer exporter"
            ) from exc
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 - onnxslim raises whatever its passes raise
        log.warning("onnxslim could not simplify %s (%s); quantizing it as it is", src.name, exc)
        slim = None
    model = slim if slim is not None else model
    name_nodes(model)
    staged = dst.with_name(dst.stem + ".named.onnx")
    save_model(model, staged)
    _infer_shapes(staged, dst)
    staged.unlink()
    return dst


def _infer_shapes(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import quant_pre_process

    src, dst = src.resolve(), dst.resolve()
    chatter = io.StringIO()
    # when its symbolic inference gives up, it saves the half-inferred graph (and its external
    # data) into the working directory; run it from a scratch one
    with (
        tempfile.TemporaryDirectory(prefix="edgeport-shapes-") as scratch,
        _working_directory(Path(scratch)),
        contextlib.redirect_stdout(chatter),
    ):
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=True)
        except Exception as exc:  # noqa: BLE001 - its symbolic inference raises plain Exception
            log.info("symbolic shape inference gave up on %s (%s); using ONNX's", src.name, exc)
            try:
                quant_pre_process(
                    str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True
                )
            except (RuntimeError, ValueError, onnx.shape_inference.InferenceError) as inner:
                raise ExportError(f"cannot infer the shapes of {src.name}: {inner}") from inner
    if chatter.getvalue().strip():
        log.debug("quant_pre_process: %s", chatter.getvalue().strip())


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11) for 3.10."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
