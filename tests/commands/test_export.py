"""``cli.py export`` end to end and its failure paths: one clear message, non-zero exit, no traceback, no file."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import make_checkpoint


def _invoke(*args: str):
    return CliRunner().invoke(main, ["-q", "export", *map(str, args)])


def _assert_clean_failure(result, message: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_help_and_choices_mirror_the_spec():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0 and "--precision" in result.output and "--calibration-data" in result.output


@pytest.mark.slow
def test_export_writes_file_and_prints_parity_table(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    result = _invoke(checkpoint, "-o", out, "--json", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "report.json").is_file()
    assert "random" in result.output and "images" in result.output and "PASS" in result.output
    assert "Accuracy on 6 validation images" in result.output
    assert not list(tmp_path.glob(".model.onnx.*"))  # no temporary file left behind


def test_int8_judged_by_the_image_tolerance(confident_checkpoint, tmp_path):
    result = _invoke(confident_checkpoint, "-o", tmp_path / "m.onnx", "--precision", "int8",
                     "--calibration-images", "8")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.startswith(("random", "images"))}
    assert "top-1 >= 75%" in rows["random"] and "top-1 >= 95%" in rows["images"]


@pytest.mark.slow
def test_parity_failure_exits_with_table_and_writes_nothing(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    result = _invoke(checkpoint, "-o", out, "--atol", "0", "--rtol", "0", "--parity-images", "0", "--keep-failed")
    _assert_clean_failure(result, "misses its tolerance")
    assert "FAIL" in result.output and "values exceed atol 0" in result.output
    assert not out.exists()
    assert (tmp_path / "model.failed.onnx").is_file() and not list(tmp_path.glob(".model.onnx.*"))


def test_missing_checkpoint(tmp_path):
    _assert_clean_failure(_invoke(tmp_path / "nope", "-o", tmp_path / "m.onnx"), "does not exist", code=2)


def test_run_folder_without_weights(tmp_path):
    _assert_clean_failure(_invoke(tmp_path, "-o", tmp_path / "m.onnx"), "no model.safetensors")


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    result = _invoke(tmp_path / "model.safetensors", "-o", tmp_path / "m.onnx")
    _assert_clean_failure(result, "not a readable safetensors file")
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_that_does_not_match_the_weights(tmp_path):
    run = make_checkpoint(tmp_path / "run", num_classes=6, meta_classes=5)
    _assert_clean_failure(_invoke(run, "-o", tmp_path / "m.onnx"), "do not match the metadata")


def test_unwritable_output(checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _assert_clean_failure(_invoke(checkpoint, "-o", blocker / "m.onnx"), "cannot write to")


def test_output_path_is_a_folder(checkpoint, tmp_path):
    result = _invoke(checkpoint, "-o", tmp_path)
    assert result.exit_code != 0 and "Traceback" not in result.output and str(tmp_path) in result.output


@pytest.mark.parametrize("opset", ["17", "26"])
def test_unsupported_opset(checkpoint, tmp_path, opset):
    result = _invoke(checkpoint, "-o", tmp_path / "m.onnx", "--opset", opset)
    _assert_clean_failure(result, "18<=x<=25", code=2)


def test_empty_calibration_folder(checkpoint, tmp_path):
    empty = tmp_path / "calib"
    (empty / "cats").mkdir(parents=True)
    (empty / "cats" / "notes.txt").write_text("no images here")
    result = _invoke(checkpoint, "-o", tmp_path / "m.onnx", "--precision", "int8", "--calibration-data", empty)
    _assert_clean_failure(result, "no calibration images in")
    assert not (tmp_path / "m.onnx").exists()


def test_default_output_name(tmp_path):
    from export.exporter import default_output

    assert default_output(tmp_path, "fp32") == tmp_path / "model.onnx"
    assert default_output(tmp_path / "w.safetensors", "int8") == Path(tmp_path / "model.int8.onnx")
    assert default_output(tmp_path, "int8", "native") == tmp_path / "model.int8.native-lrn.onnx"
