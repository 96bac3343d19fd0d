"""ONNX models that no one on this project wrote, taken from wheels on PyPI, for the tests.

``python tests/thirdparty/models.py DIR`` downloads each wheel (``pip download --no-deps``, so
nothing is installed), extracts the one ONNX file the tests use, checks its sha256 and writes
it to ``DIR/<name>.onnx``. ``make test`` runs it once; tests find the files with
:func:`model_path` and skip, naming the command to run, when they are missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("EDGEPORT_TEST_MODELS", Path(__file__).parents[2] / ".cache/models"))


@dataclass(frozen=True)
class ThirdPartyModel:
    package: str  # "name==version" on PyPI
    member: str  # path of the .onnx file inside the wheel
    sha256: str
    license: str
    what: str


MODELS = {
    # inputs: input float [batch, sequence], sr int64 [] (0-d), state float [2, batch, 128];
    # outputs: output [batch, 1], stateN [2, batch, 128]; one If on sr.
    "silero_vad": ThirdPartyModel(
        "silero-vad==6.2.1",
        "silero_vad/data/silero_vad_op18_ifless.onnx",
        "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "MIT",
        "Silero voice activity detector (opset 18, exported by PyTorch)",
    ),
    # x float [N, 3, H, W] with H, W dynamic (multiples of 32) -> probability map [N, 1, H, W]
    "ppocr_det": ThirdPartyModel(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "Apache-2.0",
        "PP-OCRv4 text detector (converted from Paddle, opset 12)",
    ),
    # x float [N, 3, H, W] -> 2 classes (text upright / upside down), softmax
    "ppocr_cls": ThirdPartyModel(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "Apache-2.0",
        "PP-OCR text orientation classifier (opset 11)",
    ),
    # bytes float [N, 1536] -> target_label [N, 113], softmax
    "magika": ThirdPartyModel(
        "magika==0.5.1",
        "magika/models/standard_v1/model.onnx",
        "71892ac28ffe028b9512561584970417f8cee1f2fbb7624634f4032cb92a0a5a",
        "Apache-2.0",
        "Magika file-type classifier (converted by tf2onnx, opset 13)",
    ),
}


def model_path(name: str) -> Path:
    return CACHE / f"{name}.onnx"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    missing = {n: m for n, m in MODELS.items() if not (dest / f"{n}.onnx").is_file()}
    packages = sorted({m.package for m in missing.values()})
    if not packages:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, *packages],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        for name, model in missing.items():
            wheel_name = model.package.split("==")[0].replace("-", "_").lower()
            wheel = next(w for w in wheels if w.name.lower().startswith(wheel_name + "-"))
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(model.member)
            if _sha256(data) != model.sha256:
                raise SystemExit(f"{name}: {model.member} in {wheel.name} has another sha256")
            target = dest / f"{name}.onnx"
            partial = target.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(target)
            print(f"{name}: {model.what} ({model.package}, {model.license}) -> {target}")


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE)
