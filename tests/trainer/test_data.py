"""Image-folder scanning, the stratified split, bad files, colour modes and the transform presets."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_image_folder
from trainer.data import (AugmentConfig, IMAGENET_MEAN, IMAGENET_STD, class_counts, eval_transform,
                          eval_transform_uint8, find_split, load_rgb, normalize_batch, train_transform)
from trainer.errors import DataError
from trainer.synthetic import CLASSES, SyntheticSpec, ensure_synthetic_dataset


def test_stratified_split_is_seeded_and_keeps_each_class_share(tmp_path):
    root = make_image_folder(tmp_path, per_class=10)
    a = find_split(root, val_split=0.2, seed=1)
    b = find_split(root, val_split=0.2, seed=1)
    c = find_split(root, val_split=0.2, seed=2)
    assert a.classes == ["circle", "square", "star"]
    assert class_counts(a.val, a.classes) == {"circle": 2, "square": 2, "star": 2}
    assert class_counts(a.train, a.classes) == {"circle": 8, "square": 8, "star": 8}
    assert a.val == b.val and a.val != c.val
    assert not set(a.train) & set(a.val)


def test_train_and_val_folders_are_used_as_given(tmp_path):
    make_image_folder(tmp_path / "train", per_class=4)
    make_image_folder(tmp_path / "val", per_class=2, seed=9)
    split = find_split(tmp_path, val_split=0.5)
    assert split.source == "train/val folders"
    assert len(split.train) == 12 and len(split.val) == 6
    assert all("/val/" in p for p, _ in split.val)


def test_val_folder_with_unknown_class_is_rejected(tmp_path):
    make_image_folder(tmp_path / "train", classes=("a", "b"), per_class=2)
    make_image_folder(tmp_path / "val", classes=("a", "c"), per_class=1)
    with pytest.raises(DataError, match="classes that the training folder lacks: c"):
        find_split(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        find_split(tmp_path / "nope")


def test_empty_folder_and_single_class(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        find_split(tmp_path)
    make_image_folder(tmp_path, classes=("only",), per_class=3)
    with pytest.raises(DataError, match="only the class 'only'"):
        find_split(tmp_path)


def test_class_without_images_is_named(tmp_path):
    make_image_folder(tmp_path, classes=("a", "b"), per_class=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="without images.*empty"):
        find_split(tmp_path)


def test_fewer_images_than_the_batch(tmp_path):
    make_image_folder(tmp_path, per_class=3)
    with pytest.raises(DataError, match="fewer than the batch size 64"):
        find_split(tmp_path, min_train=64)


def test_corrupt_files_are_listed_or_skipped(tmp_path):
    root = make_image_folder(tmp_path, per_class=5)
    (root / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = Image.open(root / "star" / "0.png")
    good.save(root / "star" / "truncated.jpg")
    data = (root / "star" / "truncated.jpg").read_bytes()
    (root / "star" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        find_split(root)
    assert "2 unreadable image file(s)" in str(err.value)
    assert "broken.jpg" in str(err.value) and "truncated.jpg" in str(err.value)
    assert "--skip-bad-images" in str(err.value)
    split = find_split(root, skip_bad_images=True)
    assert len(split.bad_files) == 2
    assert all("broken" not in p and "truncated" not in p for p, _ in split.train + split.val)
    assert len(split.train) + len(split.val) == 15


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16"])
def test_any_colour_mode_loads_as_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    img = rgb.convert("P") if mode == "P" else rgb.convert("L").convert(mode) if mode in ("I;16", "LA") \
        else rgb.convert(mode)
    if mode == "P":
        img.info["transparency"] = 0
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_transforms_give_227_tensors_and_eval_is_deterministic(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (180, 300, 3), dtype=np.uint8))
    ev = eval_transform(IMAGENET_MEAN, IMAGENET_STD)
    a, b = ev(img), ev(img)
    assert a.shape == (3, 227, 227) and a.dtype == torch.float32
    assert torch.equal(a, b)
    tr = train_transform(AugmentConfig())
    torch.manual_seed(0)
    c, d = tr(img), tr(img)
    assert c.shape == (3, 227, 227) and c.dtype == torch.uint8 and not torch.equal(c, d)
    off = train_transform(AugmentConfig(enabled=False))
    assert torch.equal(off(img), eval_transform_uint8()(img))
    # the trainer's batched normalisation equals the per-image float transform
    batch = torch.stack([eval_transform_uint8()(img)] * 2).contiguous(memory_format=torch.channels_last)
    normalized = normalize_batch(batch, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(normalized[0], a)
    assert normalized.is_contiguous(memory_format=torch.channels_last)
    # normalisation: a mid-grey image maps to (0.5 - mean) / std per channel
    grey = ev(Image.new("RGB", (250, 250), (128, 128, 128)))
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(grey.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_each_augmentation_can_be_switched_off():
    def names(cfg):
        return [type(t).__name__ for t in train_transform(cfg).transforms]

    full = names(AugmentConfig())
    assert {"RandomAffine", "RandomHorizontalFlip", "RandomVerticalFlip"} <= set(full)
    assert "RandomVerticalFlip" not in names(AugmentConfig(vflip=False))
    assert "RandomHorizontalFlip" not in names(AugmentConfig(hflip=False))
    assert "RandomAffine" not in names(AugmentConfig(rotation_deg=0, zoom=(1.0, 1.0)))


def test_builtin_data_is_deterministic_and_cached(tmp_path):
    spec = SyntheticSpec(images_per_class=3, image_size=48)
    first = ensure_synthetic_dataset(tmp_path / "a", spec)
    second = ensure_synthetic_dataset(tmp_path / "b", spec)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert len(files) == 3 * len(CLASSES)
    assert sorted(d.name for d in first.iterdir() if d.is_dir()) == sorted(CLASSES)
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
    mtime = (first / files[0]).stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path / "a", spec) == first  # cached: not rewritten
    assert (first / files[0]).stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".shapes")]  # no temp folders left


def test_epoch_sampler_is_seeded_per_epoch_and_splits_ranks():
    from trainer.data import EpochSampler

    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(1)
    first = list(s)
    assert list(s) == first and {e for e, _ in first} == {1}
    assert sorted(i for _, i in first) == list(range(10))
    s.set_epoch(2)
    assert [i for _, i in s] != [i for _, i in first]
    ranks = [EpochSampler(10, True, 3, num_replicas=3, rank=r) for r in range(3)]
    for r in ranks:
        r.set_epoch(1)
    shares = [[i for _, i in r] for r in ranks]
    assert [len(x) for x in shares] == [4, 4, 4]  # padded so every rank runs the same number of steps
    assert set().union(*map(set, shares)) == set(range(10))
    evals = [[i for _, i in EpochSampler(10, False, num_replicas=3, rank=r, pad=False)] for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(10))  # evaluation: every image exactly once


def test_augmentation_is_a_function_of_epoch_and_index(tmp_path):
    from tests.helpers import make_image_folder
    from trainer.data import ImageListDataset

    root = make_image_folder(tmp_path, per_class=2, size=96)
    split = find_split(root, val_split=0.3)
    ds = ImageListDataset(split.train, train_transform(AugmentConfig()), seed=5)
    torch.manual_seed(123)
    a = ds[(4, 0)][0]
    state = torch.get_rng_state()
    assert torch.equal(ds[(4, 0)][0], a)  # same epoch and index: same augmentation
    assert torch.equal(torch.get_rng_state(), state)  # and the caller's RNG (dropout) is untouched
    assert not torch.equal(ds[(5, 0)][0], a)
