"""The original AlexNet (Krizhevsky et al., 2012): 5 conv + 3 FC, grouped conv2/4/5, LRN, overlapping max-pool."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from core.contract import INPUT_SHAPE, INPUT_SIZE
from trainer.errors import InputShapeError
from trainer.lrn import LocalResponseNorm

ARCHITECTURE = "alexnet-2012"
# The paper's LRN constants (section 3.3).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def _lrn() -> LocalResponseNorm:
    return LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


class AlexNet(nn.Module):
    """AlexNet with the seed's exact layer sizes.

    Args:
        num_classes: Width of the last FC layer (1000 gives the paper's 60,965,224 parameters).
        dropout: Drop probability before FC6 and FC7 (the paper's 0.5).

    Raises:
        InputShapeError: from ``forward`` when the input is not ``N×3×227×227``.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),               # 227 → 55
            ("relu1", nn.ReLU(inplace=True)),
            ("lrn1", _lrn()),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),                    # 55 → 27
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),  # kernel depth 48
            ("relu2", nn.ReLU(inplace=True)),
            ("lrn2", _lrn()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),                    # 27 → 13
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),            # kernel depth 256
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),  # kernel depth 192
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),  # kernel depth 192
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),                    # 13 → 6
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(dropout)),
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He initialisation keeps activations from vanishing through 8 ReLU layers without batch norm; the paper's
        # N(0, 0.01) with unit biases leaves this model stuck at chance unless the lr schedule is tuned by hand.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # The logits start small, so the initial loss is ~log(num_classes) rather than a large, confident mistake.
        nn.init.normal_(self.classifier.fc8.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise InputShapeError(
                f"AlexNet needs a constant input size: expected a tensor of shape N×3×{INPUT_SIZE}×{INPUT_SIZE} "
                f"(batch, RGB channels, height, width), got {tuple(x.shape)}"
            )
        x = self.features(x)
        x = torch.flatten(x, 1)  # 256×6×6 = 9216
        return self.classifier(x)


def build_model(num_classes: int, dropout: float = 0.5) -> AlexNet:
    """Build the model described by a checkpoint's metadata (architecture fields only)."""
    return AlexNet(num_classes=num_classes, dropout=dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
