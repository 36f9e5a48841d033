"""`cli.py predict`: the same predictions on ONNX Runtime and PyTorch, validation preprocessing, bad inputs reported
one by one (the rest still predicted), the JSON format, --top-k bounds and runtime errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import cli
from deploy.predict.predict import expand_inputs, softmax
from runtimes.registry import RUNTIME_NAMES, availability

pytest.importorskip("onnx")
CLASSES = ["cat", "dog", "fox"]
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)  # not ImageNet's: a preprocessing that ignored the metadata would show


class Tiny227(nn.Module):
    """3×227×227 → 3 logits in a millisecond: predict's plumbing without AlexNet's cost."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=9, stride=8)
        self.fc = nn.Linear(8, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3))) * 4  # * 4: clear margins between classes


def invoke(*args):
    result = CliRunner().invoke(cli.main, ["predict", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Images of different sizes and modes (RGB JPEG, grayscale PNG, RGBA PNG): load_rgb must handle each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = 180 + 17 * i, 300 - 23 * i
        pixels = (rng.integers(0, 256, (h, w, 3)) * np.linspace(0.3, 1, w)[None, :, None]).astype(np.uint8)
        image = Image.fromarray(pixels)
        kind = i % 3
        path = folder / f"img{i}.{'jpg' if kind == 0 else 'png'}"
        (image if kind == 0 else image.convert("L" if kind == 1 else "RGBA")).save(path)
        paths.append(path)
    return paths


def reference_probabilities(model: nn.Module, paths, mean, std) -> np.ndarray:
    """What validation does: load RGB, resize 227 + center crop, normalise, then softmax of the PyTorch model."""
    from trainer.data import eval_transform, load_rgb

    transform = eval_transform(mean, std)
    x = torch.stack([transform(load_rgb(p)) for p in paths])
    with torch.inference_mode():
        return softmax(model(x).numpy())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, onnx_exporter):
    """Tiny227 as a dynamic-batch and a static-batch (2) ONNX file, both with alexnet_deploy metadata, + images."""
    from core.onnx_file import OnnxMeta

    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = Tiny227().eval()
    meta = OnnxMeta(class_names=CLASSES, mean=list(MEAN), std=list(STD), input_shape=[3, 227, 227],
                    precision="fp32", checkpoint_sha256="", checkpoint_path="")
    dynamic = onnx_exporter(model, root / "tiny.onnx", (3, 227, 227), meta=meta)
    static = onnx_exporter(model, root / "tiny-b2.onnx", (3, 227, 227), dynamic_batch=False, batch=2, meta=meta)
    images = write_images(root / "images", 5)
    return model, dynamic, static, images, root


def test_help_and_runtime_choices():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--runtime", "--top-k", "--batch-size", "--recursive", "--json"):
        assert option in result.output
    option = next(p for p in cli.predict.params if p.name == "runtime")
    assert set(option.type.choices) == set(RUNTIME_NAMES)


def test_onnx_and_torch_predict_the_same(alexnet_run):
    images = sorted(alexnet_run.data_dir.rglob("*.jpg"))
    onnx_out = invoke(alexnet_run.onnx_path, *images, "--json", "--top-k", 2)
    torch_out = invoke(alexnet_run.run_dir, *images, "--json", "--top-k", 2)
    assert onnx_out.exit_code == 0 and torch_out.exit_code == 0, onnx_out.output + torch_out.output
    assert "with onnxruntime" in onnx_out.stderr and "with torch" in torch_out.stderr
    by_onnx, by_torch = json.loads(onnx_out.stdout), json.loads(torch_out.stdout)
    assert [r["path"] for r in by_onnx] == [r["path"] for r in by_torch] == [str(p) for p in images]
    expected = reference_probabilities(alexnet_run.model, images, *_imagenet())
    for a, b, want in zip(by_onnx, by_torch, expected):
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"] == int(want.argmax())
        for entry in (a, b):
            got = {p["index"]: p["probability"] for p in entry["predictions"]}
            assert got == pytest.approx({i: want[i] for i in got}, abs=1e-5)
            assert [p["class"] for p in entry["predictions"]] == [alexnet_run.classes[i] for i in got]


def _imagenet():
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD

    return IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("which, batch_size", [("dynamic", 32), ("dynamic", 2), ("static", 32)])
def test_batches_give_the_validation_preprocessing_results(tiny, which, batch_size):
    model, dynamic, static, images, _ = tiny
    result = invoke(dynamic if which == "dynamic" else static, *images, "--json", "--top-k", 3,
                    "--batch-size", batch_size)
    assert result.exit_code == 0, result.output
    expected = reference_probabilities(model, images, MEAN, STD)  # the metadata's mean/std, not ImageNet's
    for entry, want in zip(json.loads(result.stdout), expected):
        probabilities = [p["probability"] for p in entry["predictions"]]
        assert [p["index"] for p in entry["predictions"]] == list(np.argsort(-want))
        assert probabilities == pytest.approx(sorted(want, reverse=True), abs=1e-5)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)


def test_bad_inputs_are_reported_and_the_rest_predicted(tiny):
    _, dynamic, _, images, root = tiny
    (root / "notes.txt").write_text("not an image\n")
    data = images[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    args = [images[0], images[1], root / "images", root / "notes.txt", root / "truncated.jpg", root / "gone.png",
            images[2]]
    result = invoke(dynamic, *args, "--top-k", 2)
    assert result.exit_code == 1, result.output
    for good in (images[0], images[1], images[2]):
        assert str(good) in result.stdout
    assert result.stdout.splitlines()[0].split() == ["image", "rank", "class", "probability"]
    assert len(result.stdout.splitlines()) == 1 + 3 * 2  # header + top-2 rows of each good image
    errors = result.stderr
    assert f"Error: {root / 'images'}: is a directory; pass its images" in errors and "--recursive" in errors
    assert f"Error: {root / 'notes.txt'}: not an image file" in errors
    assert f"Error: {root / 'truncated.jpg'}: corrupt or truncated image" in errors
    assert f"Error: {root / 'gone.png'}: no such file" in errors
    assert "Predicted 3 of 7 input(s)" in errors and "4 failed" in errors


def test_only_bad_inputs_print_no_table(tiny):
    _, dynamic, _, _, root = tiny
    result = invoke(dynamic, root / "gone.png", root / "also-gone.jpg")
    assert result.exit_code == 1
    assert result.stdout == ""  # no header over an empty table
    assert "Predicted 0 of 2 input(s)" in result.stderr and "2 failed" in result.stderr


def test_json_lists_predictions_and_errors_in_input_order(tiny):
    _, dynamic, _, images, root = tiny
    result = invoke(dynamic, images[0], root / "missing.jpg", images[1], "--json", "--top-k", 2)
    assert result.exit_code == 1
    entries = json.loads(result.stdout)  # stdout is pure JSON; the error goes to stderr
    assert [e["path"] for e in entries] == [str(images[0]), str(root / "missing.jpg"), str(images[1])]
    assert entries[1] == {"path": str(root / "missing.jpg"), "error": "no such file"}
    for entry in (entries[0], entries[2]):
        assert set(entry) == {"path", "predictions"} and len(entry["predictions"]) == 2
        for p in entry["predictions"]:
            assert set(p) == {"class", "index", "probability"} and p["class"] == CLASSES[p["index"]]
        assert entry["predictions"][0]["probability"] >= entry["predictions"][1]["probability"]
    assert "missing.jpg: no such file" in result.stderr


def test_recursive_expands_folders_to_their_images(tmp_path):
    images = write_images(tmp_path / "set" / "sub", 2) + write_images(tmp_path / "set", 1)
    (tmp_path / "set" / "readme.txt").write_text("skipped: not an image extension")
    (tmp_path / "set" / ".hidden.jpg").write_bytes(b"skipped: hidden")
    (tmp_path / "empty").mkdir()
    expanded = expand_inputs([tmp_path / "set", tmp_path / "empty"], recursive=True)
    assert [p for p, e in expanded if e is None] == sorted(str(p) for p in images)
    assert [p for p, e in expanded if e is not None] == [str(tmp_path / "empty")]
    assert "without image files" in expanded[-1][1]


def test_recursive_cli(tiny):
    _, dynamic, _, images, root = tiny
    result = invoke(dynamic, "-r", root / "images", "--json")  # default --top-k: 5, capped at the 3 classes
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["path"] for e in entries] == sorted(str(p) for p in images)
    assert all(len(e["predictions"]) == len(CLASSES) for e in entries)


@pytest.mark.parametrize("k, code, message", [
    (0, 2, "x>=1"), (4, 1, "Error: --top-k 4 is outside 1..3: the model has 3"), (3, 0, "Predicted 1 of 1")])
def test_top_k_bounds(tiny, k, code, message):
    _, dynamic, _, images, _ = tiny
    result = invoke(dynamic, images[0], "--top-k", k)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert len(result.stdout.splitlines()) == (1 + k if code == 0 else 0)  # nothing printed before the error


def test_checkpoint_with_an_onnx_runtime_says_export_first(alexnet_run):
    result = invoke(alexnet_run.run_dir, alexnet_run.data_dir / "dark" / "0.jpg", "--runtime", "onnxruntime")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --runtime onnxruntime runs ONNX files") and "cli.py export" in result.output


def test_onnx_without_our_metadata_is_refused(tiny_onnx, tiny):
    result = invoke(tiny_onnx.path, tiny[3][0])
    assert result.exit_code == 1 and "carries no alexnet-deploy metadata" in result.output


def test_torch_on_an_onnx_file_needs_its_checkpoint(tiny):
    result = invoke(tiny[1], tiny[3][0], "--runtime", "torch")  # the metadata names no checkpoint
    assert result.exit_code == 1 and "pass the run folder" in result.output


def test_unknown_runtime_is_a_usage_error(tiny):
    result = invoke(tiny[1], tiny[3][0], "--runtime", "tvm")
    assert result.exit_code == 2 and "tvm" in result.output and "openvino" in result.output  # lists the valid ones


def test_openvino_predicts_like_onnxruntime(tiny):
    from runtimes.registry import availability

    if not availability("openvino")[0]:
        pytest.skip(availability("openvino")[1])
    ort, ov = (invoke(tiny[1], *tiny[3], "--runtime", name, "--json") for name in ("onnxruntime", "openvino"))
    assert ort.exit_code == ov.exit_code == 0, ov.output
    first = lambda out: json.loads(out[out.index("["):out.rindex("]") + 1])  # noqa: E731 - the JSON list only
    for a, b in zip(first(ort.output), first(ov.output)):
        assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]


@pytest.mark.parametrize("name", ["onnxruntime-cuda", "tensorrt"])
def test_unavailable_runtime_exits_3_with_the_reason(tiny, name):
    ok, reason = availability(name)
    if ok:
        pytest.skip(f"{name} is available here")
    result = invoke(tiny[1], tiny[3][0], "--runtime", name)
    assert result.exit_code == 3 and result.output.startswith(f"Error: {name}: ")


@pytest.mark.gpu
def test_cuda_runtime_predicts_like_the_cpu(tiny):
    ok, reason = availability("onnxruntime-cuda")
    if not ok:
        pytest.skip(reason)
    _, dynamic, _, images, _ = tiny
    cpu = json.loads(invoke(dynamic, *images, "--json", "--top-k", 3).stdout)
    gpu = invoke(dynamic, *images, "--json", "--top-k", 3, "--runtime", "onnxruntime-cuda")
    assert gpu.exit_code == 0, gpu.output
    for a, b in zip(cpu, json.loads(gpu.stdout)):
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], abs=1e-4)


def test_table_never_rounds_a_probability_to_0_or_100_percent():
    from deploy.predict.predict import ClassScore, ImageResult, table_header, table_rows

    scores = (ClassScore("cat", 0, 0.999999), ClassScore("dog", 1, 1e-6), ClassScore("fox", 2, 0.0))
    result = ImageResult("a.jpg", scores)
    rows = table_rows(result, 5, 5)
    assert [r.split()[-1] for r in rows] == [">99.99%", "<0.01%", "0.00%"]
    assert rows[0].split()[:3] == ["a.jpg", "1", "cat"] and rows[1].split()[:2] == ["2", "dog"]
    assert len(table_header(5, 5)) == len(rows[0])  # the columns line up


def test_onnx_with_another_input_size_is_refused(tiny_onnx, tiny, tmp_path):
    import onnx

    from core.onnx_file import OnnxMeta, write_metadata

    model = onnx.load(str(tiny_onnx.path))  # 3×16×16 input: not what the validation crop gives
    write_metadata(model, OnnxMeta(class_names=["a", "b", "c", "d", "e"], mean=[0.5] * 3, std=[0.5] * 3,
                                   input_shape=[3, 16, 16], precision="fp32", checkpoint_sha256="", checkpoint_path=""))
    onnx.save(model, str(tmp_path / "small.onnx"))
    result = invoke(tmp_path / "small.onnx", tiny[3][0])
    assert result.exit_code == 1 and "predict feeds one input of shape (N, 3, 227, 227)" in result.output
