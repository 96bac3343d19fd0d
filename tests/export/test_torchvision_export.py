"""torchvision models by name: a segmentation model (LR-ASPP) and the SSDlite detector exported
by ``edgeport export torchvision:NAME``, then run by the runtime's numpy post-processing and
compared with torchvision itself."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import export_command
from export_models import photo_crops

from edgeport.export.torchvision_models import TorchvisionModel, prepare
from edgeport.runtime import load
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.reference import load_reference
from edgeport.runtime.tasks import Detections

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

LRASPP = "lraspp_mobilenet_v3_large"


def export_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = export_command(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def lraspp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lraspp") / "bundle"
    flags = ["--image-size", "128", "--precision", "fp32,fp16"]
    export_cli(f"torchvision:{LRASPP}", *flags, "--out", str(out))
    return out


def test_segmentation_bundle_reloads_its_reference_and_passed_parity(lraspp_bundle: Path) -> None:
    manifest = Manifest.load(lraspp_bundle)
    assert [(a.name, a.parity_passed) for a in manifest.artifacts] == [
        ("onnx-fp32", True),
        ("onnx-fp16", True),
    ]
    card = manifest.card
    assert card.task == "segmentation" and card.input_size == (128, 128)
    assert card.class_names[:2] == ("__background__", "aeroplane") and card.num_classes == 21
    assert card.mean == (0.485, 0.456, 0.406) and card.postprocess["output"] == "out"
    assert [(s.name, s.shape) for s in card.outputs] == [("out", ("batch", 21, 128, 128))]
    stored = load_reference(lraspp_bundle, manifest)
    assert stored is not None and stored.count == 4 and stored.labels is None
    prepared = prepare(TorchvisionModel(LRASPP, image_size=(128, 128)))  # the same seed
    with torch.no_grad():
        again = prepared.module(torch.from_numpy(stored.inputs["images"])).numpy()
    np.testing.assert_allclose(stored.outputs["out"], again, atol=1e-5)
    assert manifest.export["source"] == {
        "kind": "torchvision",
        "name": LRASPP,
        "weights": None,
        "seed": 0,
    }


def test_segment_gives_label_maps_at_each_images_size(lraspp_bundle: Path) -> None:
    small = photo_crops(2, (128, 128), seed=3)
    large = photo_crops(1, (200, 300), seed=4)[0]
    with load(lraspp_bundle, precision="fp32") as model:
        maps = model.segment([small[0], small[1], large])
        card = model.card
    assert [m.shape for m in maps] == [(128, 128), (128, 128), (200, 300)]
    assert all(m.dtype == np.int64 and m.min() >= 0 and m.max() < 21 for m in maps)
    from edgeport.runtime.preprocess import preprocess

    assert card is not None
    prepared = prepare(TorchvisionModel(LRASPP, image_size=(128, 128)))
    with torch.no_grad():
        logits = prepared.module(torch.from_numpy(preprocess(list(small), card))).numpy()
    agreement = float((logits.argmax(1) == np.stack(maps[:2])).mean())
    log.info("segment vs PyTorch argmax: %.5f of pixels agree", agreement)
    assert agreement > 0.999


def torchvision_ssdlite(weights: Path) -> torch.nn.Module:
    from safetensors.torch import load_file
    from torchvision.models import detection

    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area - inter, 1e-9)


def match(ref: dict[str, np.ndarray], got: Detections) -> tuple[int, float, float]:
    """Greedy one-to-one matching (same label, best IoU >= 0.5): matched, max box and score
    differences of the matches."""
    used = np.zeros(len(got), dtype=bool)
    box_diff = score_diff = 0.0
    matched = 0
    for box, score, label in zip(ref["boxes"], ref["scores"], ref["labels"], strict=True):
        overlap = np.where((got.labels == label) & ~used, iou(box, got.boxes), -1.0)
        j = int(np.argmax(overlap)) if len(overlap) else -1
        if j < 0 or overlap[j] < 0.5:
            continue
        used[j], matched = True, matched + 1
        box_diff = max(box_diff, float(np.abs(got.boxes[j] - box).max()))
        score_diff = max(score_diff, abs(float(got.scores[j]) - float(score)))
    return matched, box_diff, score_diff


def test_detect_matches_torchvisions_own_output(
    ssdlite_bundle: Path, ssdlite_weights: Path
) -> None:
    images = photo_crops(6, (320, 320), seed=7)
    with load(ssdlite_bundle) as model:
        found = model.detect(list(images))
    with torch.no_grad():
        batch = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
        expected = torchvision_ssdlite(ssdlite_weights)(batch)
    totals = np.zeros(3)
    for ref, got in zip(expected, found, strict=True):
        ref = {k: v.numpy() for k, v in ref.items()}
        matched, box_diff, score_diff = match(ref, got)
        assert len(got) == len(ref["scores"]) == matched
        totals = np.array(
            [totals[0] + matched, max(totals[1], box_diff), max(totals[2], score_diff)]
        )
    log.info(
        "detect vs torchvision: %d of %d detections matched, max box diff %.3g px, max score "
        "diff %.3g",
        totals[0], sum(len(f) for f in found), totals[1], totals[2],
    )  # fmt: skip
    assert totals[1] < 0.05 and totals[2] < 1e-4
    assert found[0].scores[0] > 0.5  # real detections, not uniform 1/91 scores
    assert found[0].names[0] == model.card.class_names[int(found[0].labels[0])]


def test_detector_bundle_carries_its_postprocessing(ssdlite_bundle: Path) -> None:
    manifest = Manifest.load(ssdlite_bundle)
    card = manifest.card
    assert card.task == "detection" and card.input_size == (320, 320)
    assert card.mean == (0.5, 0.5, 0.5) and len(card.class_names) == 91
    post = card.postprocess
    assert post["kind"] == "ssd" and post["box_coder_weights"] == [10.0, 10.0, 5.0, 5.0]
    assert (post["score_thresh"], post["nms_thresh"], post["detections_per_img"]) == (
        0.001,
        0.55,
        300,
    )
    assert [(s.name, s.shape) for s in card.outputs] == [
        ("bbox_regression", ("batch", 3234, 4)),
        ("cls_logits", ("batch", 3234, 91)),
        ("anchors", ("batch", 3234, 4)),
    ]
    (art,) = manifest.artifacts
    assert art.parity_passed is True
    stored = load_reference(ssdlite_bundle, manifest)
    assert stored is not None and stored.outputs["anchors"].shape == (4, 3234, 4)
    assert manifest.export["source"]["weights"].endswith("ssdlite.safetensors")


def test_detect_returns_boxes_in_each_images_pixels(ssdlite_bundle: Path) -> None:
    photo = photo_crops(1, (480, 640), seed=11)[0]
    with load(ssdlite_bundle) as model:
        (wide,) = model.detect(photo, score_threshold=0.3)
        (square,) = model.detect(photo[:, :480], score_threshold=0.3)
    for found, (height, width) in ((wide, (480, 640)), (square, (480, 480))):
        assert len(found) and found.scores.min() > 0.3
        assert found.boxes[:, [0, 2]].max() <= width and found.boxes[:, [1, 3]].max() <= height
        assert (found.boxes[:, 2:] >= found.boxes[:, :2]).all()
    assert wide.boxes[:, 2].max() > 480  # beyond the square's width: rescaled, not cropped


def test_classifier_by_name_predicts_image_files(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "bundle"
    proc = export_cli("torchvision:mobilenet_v3_small", "--image-size", "96", "--out", str(out))
    assert "onnx-fp32" in proc.stdout and "top1=100.00%" in proc.stdout
    manifest = Manifest.load(out)
    assert manifest.card.task == "classification" and manifest.card.num_classes == 1000
    assert manifest.card.class_names[0] == "tench"  # ImageNet's, from torchvision's metadata
    path = tmp_path / "photo.png"
    Image.fromarray(photo_crops(1, (150, 120))[0]).save(path)
    with load(out) as model:
        (prediction,) = model.predict(path, top_k=3)
    assert len(prediction.labels) == 3 and prediction.top1 in manifest.card.class_names


def test_a_network_the_meta_device_cannot_build_exports(tmp_path: Path) -> None:
    """RegNets compute their widths from tensors, so they cannot be built on the meta device;
    the input-size probe then runs on fake tensors once the network is built."""
    out = tmp_path / "bundle"
    proc = export_cli("torchvision:regnet_y_400mf", "--image-size", "64", "--out", str(out))
    assert "onnx-fp32" in proc.stdout and "passed" in proc.stdout
    assert Manifest.load(out).card.input_size == (64, 64)


def test_a_size_a_network_cannot_take_names_the_export_flag(tmp_path: Path) -> None:
    proc = export_command("torchvision:inception_v3", "--image-size", "32", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "torchvision:inception_v3 cannot take a 3x32x32 input" in proc.stderr
    assert proc.stderr.rstrip().endswith("pass --image-size")
