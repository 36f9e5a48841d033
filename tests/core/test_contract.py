"""core/contract.py: the checks every file-read class list and normalisation goes through (checkpoint and ONNX)."""
from __future__ import annotations

import pytest

from core.contract import is_finite_number, preprocessing_problem

GOOD = (["cat", "dog"], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])


@pytest.mark.parametrize("value, ok", [(1, True), (0.5, True), (float("nan"), False), (float("inf"), False),
                                       (True, False), ("1", False), (None, False)])
def test_is_finite_number(value, ok):
    assert is_finite_number(value) is ok


@pytest.mark.parametrize("index, bad, fragment", [
    (0, [], "class_names"), (0, ["cat", " "], "class_names"), (0, "cat,dog", "class_names"),
    (1, [0.5, 0.5], "mean must be 3 finite numbers"), (1, [0.5, float("nan"), 0.5], "mean must be 3 finite"),
    (2, [0.2, 0.0, 0.2], "std must be 3 positive finite numbers"), (2, [0.2, True, 0.2], "std must be 3 positive"),
])
def test_preprocessing_problem_names_the_field(index, bad, fragment):
    assert preprocessing_problem(*GOOD) is None
    fields = list(GOOD)
    fields[index] = bad
    assert fragment in preprocessing_problem(*fields)
