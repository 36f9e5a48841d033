"""The layer comparison on synthetic activations: error measures, layouts and dtypes, and the first layer beyond."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.layers.compare import (LAYER_TOLERANCES, LayerTolerance, align, compare_layer, compare_layers,
                                   first_beyond)
from export.layers import LAYERS

TOL = LayerTolerance(max_rel_error=1e-3, min_cosine=0.999)


def _activations(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"conv": (4, 8, 5, 5), "lrn": (4, 8, 5, 5), "pool": (4, 8, 2, 2), "fc": (4, 16)}
    out = {}
    for name in LAYERS:
        kind = next(k for k in shapes if name.startswith(k))
        out[name] = np.maximum(rng.standard_normal(shapes[kind if name != "fc8" else "fc"]), 0).astype(np.float32)
    return out


def test_a_small_divergence_is_found_at_its_layer_and_not_before():
    """Noise of 1e-5 everywhere, then conv3 (and everything after it) off by 5 %: conv3 is the first beyond."""
    reference = _activations()
    rng = np.random.default_rng(1)
    candidate = {}
    for i, name in enumerate(LAYERS):
        drift = 0.05 if i >= LAYERS.index("conv3") else 1e-5
        r = reference[name]
        candidate[name] = r + drift * np.linalg.norm(r) / np.sqrt(r.size) * rng.standard_normal(r.shape)
    diffs = compare_layers(reference, candidate, TOL)
    assert [d.layer for d in diffs] == list(LAYERS)
    first = first_beyond(diffs)
    assert first is not None and first.layer == "conv3"
    assert 0.03 < first.rel_error < 0.08 and all(d.rel_error < 3e-5 for d in diffs[:LAYERS.index("conv3")])
    assert diffs[-1].top1_agreement is not None and all(d.top1_agreement is None for d in diffs[:-1])


def test_identical_activations_pass_with_zero_error():
    reference = _activations()
    diffs = compare_layers(reference, {k: v.copy() for k, v in reference.items()}, TOL)
    assert first_beyond(diffs) is None
    assert all(d.rel_error == 0 and d.max_abs == 0 and d.cosine == pytest.approx(1.0) for d in diffs)
    assert diffs[-1].top1_agreement == 1.0


def test_fp16_nhwc_and_flattened_outputs_are_aligned():
    r = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(align(r, r.transpose(0, 2, 3, 1)), r)               # NHWC
    np.testing.assert_array_equal(align(r, r.reshape(2, -1)), r)                      # pool5 after the flatten
    assert align(r, r.astype(np.float16)).dtype == np.float32                         # fp16 widened
    d = compare_layer("pool5", r, r.astype(np.float16).reshape(2, -1), LAYER_TOLERANCES["fp16"])
    assert d.passed and 0 < d.rel_error < 1e-3 and d.shape == (2, 60)
    with pytest.raises(ValueError, match="does not hold"):
        align(r, r[:, :2])


def test_a_wrong_shape_or_a_nan_fails_the_layer():
    r = np.ones((2, 3), np.float32)
    assert not compare_layer("fc6", r, np.ones((2, 4), np.float32), TOL).passed
    bad = r.copy()
    bad[0, 0] = np.nan
    d = compare_layer("fc6", r, bad, TOL)
    assert not d.passed and d.rel_error == float("inf")


def test_one_broken_image_fails_by_its_cosine():
    """99 images exact and one inverted: the whole-tensor relative error stays small, the worst cosine does not."""
    r = np.abs(np.random.default_rng(0).standard_normal((100, 50))).astype(np.float32) + 0.1
    c = r.copy()
    c[7] = r[7][::-1]
    d = compare_layer("fc7", r, c, LayerTolerance(max_rel_error=0.5, min_cosine=0.99))
    assert d.rel_error < 0.5 and d.cosine < 0.99 and not d.passed


def test_dead_relu_maps_agree():
    r = np.zeros((2, 3, 2, 2), np.float32)
    d = compare_layer("conv5", r, r.copy(), TOL)
    assert d.passed and d.cosine == 1.0 and d.rel_error == 0


def test_every_precision_has_a_layer_tolerance():
    from core.contract import PRECISIONS

    assert set(LAYER_TOLERANCES) == set(PRECISIONS)
    assert [LAYER_TOLERANCES[p].max_rel_error for p in ("fp32", "fp16", "bf16", "int8")] == \
        sorted(LAYER_TOLERANCES[p].max_rel_error for p in PRECISIONS)
