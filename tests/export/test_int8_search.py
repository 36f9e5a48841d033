"""The accuracy-aware int8 search: it finds a model's one sensitive layer and keeps only that one in fp32; it fails with
the best drop reached, writing nothing, when no layer set meets the budget; and the file records what it measured."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from core.onnx_file import read_metadata
from export.calibration import METHODS
from export.images import ImageSet
from export.int8_search import Int8BudgetError, SearchConfig, search_int8
from export.spec import tolerance_for
from tests.export.layer_graphs import small_alexnet

pytestmark = pytest.mark.slow  # each test exports an AlexNet and measures a dozen int8 graphs
ort = pytest.importorskip("onnxruntime")
HUGE = 1e4


def _dead_input_trap(model: torch.nn.Module, producer: torch.nn.Module, consumer: torch.nn.Module) -> None:
    """Make ``consumer`` unquantizable without changing the fp32 model: the first input channel of each of its
    groups is always 0 (``producer``'s channel there has a bias of -HUGE before its ReLU) and ``consumer`` gives it a
    weight of HUGE, so every per-channel weight scale becomes HUGE / 127 and the real weights round to 0."""
    with torch.no_grad():
        groups = getattr(consumer, "groups", 1)
        per_group_in = consumer.weight.shape[1]
        per_group_out = consumer.weight.shape[0] // groups
        for g in range(groups):
            producer.bias[g * per_group_in] = -HUGE
            consumer.weight[g * per_group_out:(g + 1) * per_group_out, 0] = HUGE


def _fp32_graph(model: torch.nn.Module) -> onnx.ModelProto:
    pytest.importorskip("onnxscript")
    from export import lrn as lrn_forms
    from export.exporter import _torch_export
    from export.spec import ExportSpec

    return lrn_forms.lower_lrn(_torch_export(model, ExportSpec()), "native")


def _confident_images(model: torch.nn.Module, count: int) -> ImageSet:
    """Noise images labelled with the fp32 model's own prediction, keeping those with the clearest margins (so int8
    rounding elsewhere cannot flip them and only a broken layer moves the accuracy)."""
    x = np.random.default_rng(1).standard_normal((4 * count, 3, 227, 227), dtype=np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / (np.ptp(logits, axis=1) + 1e-9)
    keep = np.argsort(-margin)[:count]
    return ImageSet(x[keep], logits[keep].argmax(1), "noise")


def test_search_keeps_exactly_the_sensitive_layer_in_fp32():
    model = small_alexnet(seed=3)
    _dead_input_trap(model, model.features.conv3, model.features.conv4)
    graph = _fp32_graph(model)
    images = _confident_images(model, 40)
    calibration = ImageSet(np.random.default_rng(2).standard_normal((32, 3, 227, 227), dtype=np.float32), None, "")
    config = SearchConfig(("minmax",), 100 / len(images), tolerance_for("int8", "images"))
    proto, choice = search_int8(copy.deepcopy(graph), model, calibration, images, config)
    assert choice.kept == ("conv4",), [c.to_dict() for c in choice.candidates]
    assert choice.sensitivity["conv4"]["rank"] == 1
    assert choice.candidates[0].kept == () and not choice.candidates[0].meets(config.budget_points)
    assert choice.comparison.drop_points <= config.budget_points
    weights = {i.name for i in proto.graph.initializer}
    assert "features.conv4.weight" in weights and "features.conv4.weight_quantized" not in weights
    assert "features.conv5.weight_quantized" in weights and "classifier.fc8.weight_quantized" in weights


@pytest.fixture(scope="module")
def trapped_run(tmp_path_factory):
    """A full AlexNet checkpoint whose every layer is unquantizable (a dead input channel with a HUGE weight each;
    for conv1 the red channel, exactly 0 after normalisation on these images), with a data folder whose labels are
    the fp32 model's own predictions, so fp32 is 100 % accurate and any int8 layer costs accuracy."""
    from PIL import Image

    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import eval_transform
    from trainer.model import AlexNet

    root = tmp_path_factory.mktemp("trapped")
    torch.manual_seed(0)
    model = AlexNet(2).eval()
    f, c = model.features, model.classifier
    pairs = [(f.conv1, f.conv2), (f.conv2, f.conv3), (f.conv3, f.conv4), (f.conv4, f.conv5), (c.fc6, c.fc7),
             (c.fc7, c.fc8)]
    for producer, consumer in pairs:
        _dead_input_trap(model, producer, consumer)
    with torch.no_grad():
        f.conv5.bias[0] = -HUGE                      # pool5 channel 0 → fc6 inputs 0..35
        c.fc6.weight[:, 0] = HUGE
        f.conv1.weight[:, 0, 0, 0] = HUGE            # the red channel, 0 on every image below
    mean = (128 / 255, 0.456, 0.406)
    rng = np.random.default_rng(0)
    images = [np.dstack([np.full((64, 64), 128, np.uint8), *rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)])
              for _ in range(24)]
    transform = eval_transform(mean, (0.229, 0.224, 0.225))
    x = torch.stack([transform(Image.fromarray(i)) for i in images])
    with torch.inference_mode():
        margin = (model(x)[:, 1] - model(x)[:, 0]).numpy()
    with torch.no_grad():
        c.fc8.bias[0] += float(np.median(margin))  # half the images in each class
    with torch.inference_mode():
        labels = model(x).argmax(1).numpy()
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / "data" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "data" / f"c{label}" / f"{i}.png")
    meta = model_metadata(2, ["c0", "c1"], mean, (0.229, 0.224, 0.225), 0.5,
                          data={"path": str(root / "data"), "val_split": 0.5, "seed": 0})
    save_checkpoint(root / "run", model.state_dict(), meta)
    return root


def test_budget_not_met_exits_1_names_the_best_and_writes_nothing(trapped_run):
    from cli import main

    out = trapped_run / "model.int8.onnx"
    out.write_bytes(b"an earlier export")
    result = CliRunner().invoke(main, ["-q", "export", str(trapped_run / "run"), "--precision", "int8", "--lrn",
                                       "native", "--calibration-method", "minmax", "--max-accuracy-drop", "0.5",
                                       "-o", str(out), "--json", str(trapped_run / "report.json")])
    assert result.exit_code == 1, result.output
    assert "no int8 graph meets the accuracy budget" in result.output and "the best lost" in result.output
    assert "minmax" in result.output and "Traceback" not in result.output
    assert out.read_bytes() == b"an earlier export" and not (trapped_run / "report.json").exists()
    assert sorted(p.name for p in trapped_run.iterdir()) == ["data", "model.int8.onnx", "run"]


def test_int8_file_and_report_record_the_search(exported, tmp_path):
    result = exported("int8")
    meta = read_metadata(result.path)
    q = meta.quantization
    assert q == json.loads(json.dumps(result.quantization)) and q["method"] in METHODS
    assert [c["method"] for c in q["candidates"] if c["step"] == "method"] == list(METHODS)
    assert all({"accuracy", "drop_points", "agreement", "logit_error", "onnxruntime_img_s"} <= set(c)
               for c in q["candidates"])
    assert q["int8_layers"] and set(q["kept_fp32"]).isdisjoint(q["int8_layers"])
    assert q["calibration"]["images"].keys() == set(METHODS) and q["calibration"]["trace"]
    assert q["result"]["drop_points"] <= q["max_accuracy_drop_points"]
    assert result.to_dict()["quantization"] == result.quantization
    assert read_metadata(exported("fp32").path).quantization is None


def test_int8_budget_error_is_an_export_error():
    from export.errors import ExportError

    assert issubclass(Int8BudgetError, ExportError)
