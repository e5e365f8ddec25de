"""A researcher's own model and dataset, used by name from a parameter file
(``model: {name: "own_code:WideMLP", width: 48}``, ``data: {name: "own_code:blobs"}``); see
README, "Your own model and data". Nothing here is part of pgcore."""

import torch
from torch import nn


class WideMLP(nn.Module):
    """One hidden layer of ``width`` units; called as ``WideMLP(input_shape, num_classes, width=...)``."""

    def __init__(self, input_shape, num_classes, width=32):
        super().__init__()
        n = 1
        for s in input_shape:
            n *= s
        self.hidden = nn.Linear(n, width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def blobs(data_seed):
    """Four Gaussian blobs in 16 dimensions: (x_train, y_train, x_test, y_test)."""
    g = torch.Generator().manual_seed(data_seed)
    centers = torch.randn(4, 16, generator=g) * 2

    def draw(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return centers[y] + torch.randn(n, 16, generator=g), y

    x_train, y_train = draw(400)
    x_test, y_test = draw(200)
    return x_train, y_train, x_test, y_test


def not_tensors(data_seed):
    return [[0.0]], [0], [[0.0]], [0]
