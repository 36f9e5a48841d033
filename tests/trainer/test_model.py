"""The seed's AlexNet: layer sizes, parameter count, input checks, and the fast LRN's equivalence to PyTorch's."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.errors import InputShapeError
from trainer.lrn import LocalResponseNorm, local_response_norm
from trainer.model import AlexNet, count_parameters


def test_parameter_count_matches_the_paper():
    assert count_parameters(AlexNet(num_classes=1000)) == 60_965_224


def test_shapes_at_every_stage():
    model = AlexNet(num_classes=10).eval()
    x = torch.randn(2, 3, 227, 227)
    sizes = {}
    for name, layer in model.features.named_children():
        x = layer(x)
        sizes[name] = tuple(x.shape[1:])
    assert sizes["conv1"] == (96, 55, 55)
    assert sizes["pool1"] == (96, 27, 27)
    assert sizes["conv2"] == (256, 27, 27)
    assert sizes["pool2"] == (256, 13, 13)
    assert sizes["conv3"] == (384, 13, 13)
    assert sizes["conv4"] == (384, 13, 13)
    assert sizes["conv5"] == (256, 13, 13)
    assert sizes["pool5"] == (256, 6, 6)
    assert torch.flatten(x, 1).shape == (2, 9216)
    assert model(torch.randn(2, 3, 227, 227)).shape == (2, 10)


def test_grouped_convs_and_kernel_depths():
    f = AlexNet(1000).features
    assert (f.conv2.groups, f.conv4.groups, f.conv5.groups, f.conv3.groups) == (2, 2, 2, 1)
    assert f.conv2.weight.shape == (256, 48, 5, 5)
    assert f.conv3.weight.shape == (384, 256, 3, 3)
    assert f.conv4.weight.shape == (384, 192, 3, 3)
    assert f.conv5.weight.shape == (256, 192, 3, 3)
    assert (f.conv1.stride, f.pool1.kernel_size, f.pool1.stride) == ((4, 4), 3, 2)


def test_lrn_uses_the_papers_constants_and_dropout_is_half():
    model = AlexNet(1000)
    for lrn in (model.features.lrn1, model.features.lrn2):
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (3, 227, 227), (1, 1, 227, 227), (2, 3, 227, 228)])
def test_wrong_input_shape_names_the_expected_shape(shape):
    with pytest.raises(InputShapeError, match=r"N×3×227×227.*got"):
        AlexNet(10)(torch.randn(*shape))


@pytest.mark.parametrize("size,beta", [(5, 0.75), (4, 0.75), (3, 0.6), (1, 0.75)])
def test_fast_lrn_matches_pytorch_forward_and_gradient(size, beta):
    torch.manual_seed(0)
    x = (torch.randn(2, 9, 5, 5, dtype=torch.float64) * 4).requires_grad_()
    y_ref = F.local_response_norm(x, size, alpha=1e-2, beta=beta, k=2.0)
    y = local_response_norm(x, size, alpha=1e-2, beta=beta, k=2.0)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    (grad_ref,) = torch.autograd.grad(y_ref, x, g)
    (grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(grad, grad_ref)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 1e-2, beta, 2.0), (x,))


def test_lrn_module_computes_low_precision_inputs_in_fp32():
    x = torch.rand(2, 96, 7, 7) * 300  # squares of 300 overflow fp16's window sums
    lrn = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    out = lrn(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), atol=0.05, rtol=1e-2)


def test_fast_lrn_is_layout_independent():
    x = torch.rand(2, 96, 9, 9) * 10
    cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y_cl = local_response_norm(cl, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y_cl, F.local_response_norm(x, 5, 1e-4, 0.75, 2.0))
    g = torch.randn_like(y_cl)
    (grad_cl,) = torch.autograd.grad(y_cl, cl, g)
    x2 = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(F.local_response_norm(x2, 5, 1e-4, 0.75, 2.0), x2, g)
    torch.testing.assert_close(grad_cl, grad)
