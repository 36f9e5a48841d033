"""Checkpoints: safetensors + JSON metadata round trip, and every way a checkpoint can be bad."""
import json

import pytest
import torch
from safetensors.torch import save_file

from trainer.checkpoint import load_checkpoint, model_metadata, save_checkpoint
from trainer.errors import CheckpointError
from trainer.model import AlexNet

CLASSES = ["cat", "dog", "fox"]


def _save(run_dir, num_classes=3, **extra):
    model = AlexNet(num_classes)
    meta = model_metadata(num_classes, CLASSES[:num_classes], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 0.5, **extra)
    return model, save_checkpoint(run_dir, model.state_dict(), meta)


def test_round_trip_from_folder_and_file(tmp_path):
    model, weights = _save(tmp_path / "run", best_epoch=4)
    for source in (tmp_path / "run", weights):
        ckpt = load_checkpoint(source)
        assert ckpt.class_names == CLASSES and ckpt.meta["best_epoch"] == 4
        rebuilt = ckpt.build_model()
        for k, v in model.state_dict().items():
            assert torch.equal(rebuilt.state_dict()[k], v)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["num_classes"] == 3
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp files left


def test_metadata_lives_in_the_weights_file(tmp_path):
    _, weights = _save(tmp_path / "run")
    moved = tmp_path / "elsewhere.safetensors"
    moved.write_bytes(weights.read_bytes())  # a lone file, without model.json beside it
    assert load_checkpoint(moved).class_names == CLASSES


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors in the run folder"):
        load_checkpoint(tmp_path / "empty_run")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(bad)
    _, weights = _save(tmp_path / "run")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(weights)


def test_metadata_that_does_not_match_the_weights(tmp_path):
    model = AlexNet(3)
    meta = model_metadata(5, ["a", "b", "c", "d", "e"], (0.5,) * 3, (0.25,) * 3, 0.5)
    save_checkpoint(tmp_path / "run", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match="do not match the metadata"):
        load_checkpoint(tmp_path / "run")


def test_missing_layer_is_reported_when_building(tmp_path):
    model = AlexNet(3)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("features.conv3")}
    save_checkpoint(tmp_path / "run", state, model_metadata(3, CLASSES, (0.5,) * 3, (0.25,) * 3, 0.5))
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(tmp_path / "run").build_model()


def test_foreign_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="carries no alexnet-deploy metadata"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"alexnet_deploy": '{"format": "something-else"}'})
    with pytest.raises(CheckpointError, match="not an alexnet-deploy checkpoint"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"alexnet_deploy": "{not json"})
    with pytest.raises(CheckpointError, match="corrupt metadata"):
        load_checkpoint(path)


def test_resume_state_round_trip_and_unchanged_best_weights_are_linked(tmp_path):
    from trainer.checkpoint import load_resume_state, save_resume_state

    weights = {"w": torch.arange(4.0)}
    best = {"w": torch.ones(4)}
    save_resume_state(tmp_path, 0, {"x": 1}, weights, {"state": {}, "param_groups": []}, best, best_epoch=0)
    first_inode = (tmp_path / "resume" / "epoch-0000" / "best.safetensors").stat().st_ino
    save_resume_state(tmp_path, 1, {"x": 2}, weights, {"state": {}, "param_groups": []}, best, best_epoch=0)
    assert (tmp_path / "resume" / "epoch-0001" / "best.safetensors").stat().st_ino == first_inode  # linked
    assert not (tmp_path / "resume" / "epoch-0000").exists()  # older states are removed once LATEST moves on
    state, model_state, opt_state, loaded_best = load_resume_state(tmp_path)
    assert state["epoch"] == 1 and state["x"] == 2 and state["best_weights_epoch"] == 0
    assert torch.equal(model_state["w"], weights["w"]) and torch.equal(loaded_best["w"], best["w"])
    assert (tmp_path / "resume" / "epoch-0001" / "best.safetensors").stat().st_nlink == 1  # the old link is gone
    new_best = {"w": torch.full((4,), 7.0)}
    save_resume_state(tmp_path, 2, {"x": 3}, weights, {"state": {}, "param_groups": []}, new_best, best_epoch=2)
    assert (tmp_path / "resume" / "epoch-0002" / "best.safetensors").stat().st_ino != first_inode
    assert torch.equal(load_resume_state(tmp_path)[3]["w"], new_best["w"])
