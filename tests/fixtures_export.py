"""Session fixtures for export: one real bundle shared by every test that needs one.

``exported_bundle``: ``trained_run`` (simple_cnn_bn on digits) exported to ONNX fp32, fp16 and
int8, plus TensorRT engines when tensorrt or tensorrt_rtx is importable (tensorrt_rtx builds
them on the CPU). Tests must not modify it: ``shutil.copytree`` it before damaging it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _env import tensorrt_module_name

EXPORTED_PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="session")
def exported_bundle(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeport.export import export

    out = tmp_path_factory.mktemp("exported_bundle") / "bundle"
    export(
        trained_run,
        out,
        precisions=EXPORTED_PRECISIONS,
        tensorrt=tensorrt_module_name() is not None,
    )
    return out
