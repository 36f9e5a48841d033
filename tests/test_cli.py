"""The CLI in-process: help for every command, and one clear message + exit code for each bad input."""
import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import make_image_folder


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "export", "bench", "predict", "pipeline", "triton", "inspect", "capacity"):
        assert command in result.output
        sub = run(command, "--help")
        assert sub.exit_code == 0 and "Usage:" in sub.output


def test_an_unknown_command_is_a_usage_error():
    result = run("deploy")
    assert result.exit_code == 2 and "No such command 'deploy'" in result.output


def test_train_help_documents_every_option():
    out = run("train", "--help").output
    for option in ("--data", "--epochs", "--batch-size", "--out", "--resume", "--rotation", "--zoom", "--hflip",
                   "--vflip", "--no-augment", "--es-patience", "--rlr-factor", "--device", "--amp", "--seed"):
        assert option in out


@pytest.mark.parametrize("make,args,message,code", [
    (None, ["--data", "{tmp}/missing"], "data folder not found", 1),
    ("one_class", ["--data", "{tmp}/data"], "at least 2 classes", 1),
    ("corrupt", ["--data", "{tmp}/data"], "unreadable image file", 1),
    ("ok", ["--data", "{tmp}/data", "--batch-size", "500"], "fewer than the batch size 500", 1),
    ("ok", ["--data", "{tmp}/data", "--device", "cuda"], "no CUDA GPU is available", 3),  # not here: 3, as bench
    ("ok", ["--data", "{tmp}/data", "--amp", "fp16"], "--amp fp16 needs a CUDA device", 3),
    ("ok", ["--data", "{tmp}/data", "--es-monitor", "val_f1"], "monitors 'val_f1', which is not logged", 1),
    ("ok", ["--resume", "{tmp}/data"], "nothing to resume", 1),
])
def test_train_bad_input_gives_one_clear_error(tmp_path, make, args, message, code):
    if make == "one_class":
        make_image_folder(tmp_path / "data", classes=("only",))
    elif make in ("ok", "corrupt"):
        make_image_folder(tmp_path / "data")
        if make == "corrupt":
            (tmp_path / "data" / "star" / "bad.jpg").write_bytes(b"not an image")
    result = run("train", *(a.format(tmp=tmp_path) for a in args), "--out", tmp_path / "run")
    assert result.exit_code == code, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_train_refuses_a_folder_holding_a_run_unless_overwrite(tmp_path):
    make_image_folder(tmp_path / "data")
    args = ["train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "4",
            "--workers", "0"]
    assert run(*args).exit_code == 0
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()

    refused = run(*args, "--seed", "1")
    assert refused.exit_code == 1 and refused.output.startswith("Error: ")
    assert "already holds a training run" in refused.output and "--resume" in refused.output
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights

    typo = run("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", "--overwrite")
    assert typo.exit_code == 1 and "data folder not found" in typo.output
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights  # a bad --data costs nothing

    replaced = run(*args, "--seed", "1", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != weights  # another seed, other weights


@pytest.mark.parametrize("args", [["--zoom", "1.2,0.8"], ["--zoom", "abc"], ["--optimizer", "lbfgs"],
                                  ["--resume", "/definitely/not/here"], ["--epochs", "0"]])
def test_train_bad_flags_are_usage_errors(args):
    result = run("train", *args)
    assert result.exit_code == 2, result.output
