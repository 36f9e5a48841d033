"""Fixtures for the layer tests: the small AlexNet, its graphs and files in every precision and LRN form."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.export.layer_graphs import shared_forms


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> SimpleNamespace:
    """``small.model``, ``small.forms[form]`` and ``small.file(form)`` (written once per session), and
    ``small.torch_model`` (what deploy/ takes as the PyTorch reference)."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from deploy.models import TorchModel

    forms = shared_forms()
    model = forms.model
    folder = tmp_path_factory.mktemp("small-alexnet")
    files: dict = {}

    def file(form: str):
        if form not in files:
            files[form] = forms.save(form, folder / f"{form}.onnx")
        return files[form]

    return SimpleNamespace(model=model, forms=forms, file=file, torch_model=TorchModel(None, "small AlexNet",
                                                                                        lambda: model))
