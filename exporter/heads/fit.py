"""The head itself: a linear classifier over standardised stored vectors, fitted with torch.

Deliberately small. The stored vectors are already the models' learned representations; a linear layer
on top is fast (a few seconds for 10,000 tracks on two cores), hard to overfit on a few hundred tagged
tracks, and its scores calibrate well. An exclusive field (genre) gets a softmax over the user's values
with soft targets for tracks that carry several; a multi-valued field (mood) gets independent sigmoids.
Classes are weighted by inverse frequency so a value with few tracks is not drowned by a large one.
The standardisation is folded into the exported layer: the ONNX head takes the raw stored row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Fitted:
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # (labels, features), on standardised inputs
    bias: np.ndarray
    kind: str  # softmax | sigmoid

    def scores(self, X: np.ndarray) -> np.ndarray:
        z = ((X - self.mean) / self.std) @ self.weight.T + self.bias
        if self.kind == "softmax":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    def module(self) -> nn.Module:
        return HeadNet(self)


class HeadNet(nn.Module):
    """Raw stored row in, label scores out (standardisation folded into the linear layer)."""

    def __init__(self, fitted: Fitted) -> None:
        super().__init__()
        w = fitted.weight / fitted.std[None, :]
        b = fitted.bias - w @ fitted.mean
        self.linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            self.linear.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        self.kind = fitted.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.softmax(z, dim=1) if self.kind == "softmax" else torch.sigmoid(z)


def fit(X: np.ndarray, Y: np.ndarray, kind: str, *, l2: float = 1e-2, seed: int = 0, max_iter: int = 200) -> Fitted:
    """Fit on rows X (n, d) with targets Y (n, labels): soft class mass for softmax, 0/1 for sigmoid."""
    torch.manual_seed(seed)
    mean = X.mean(axis=0)
    std = np.maximum(X.std(axis=0), 1e-4)
    xs = torch.from_numpy(((X - mean) / std).astype(np.float32))
    y = torch.from_numpy(Y.astype(np.float32))
    n, labels = Y.shape
    count = np.maximum((Y > 0).sum(axis=0), 1).astype(np.float32)
    class_w = torch.from_numpy(n / (labels * count))
    linear = nn.Linear(X.shape[1], labels)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = linear(xs)
        if kind == "softmax":
            row_w = (y * class_w).sum(dim=1)
            loss = -(row_w * (y * torch.log_softmax(z, dim=1)).sum(dim=1)).sum() / row_w.sum()
        else:
            bce = nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
            loss = (bce * torch.where(y > 0, class_w, torch.ones_like(class_w))).mean()
        loss = loss + l2 * (linear.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return Fitted(mean.astype(np.float32), std.astype(np.float32), linear.weight.numpy().copy(),
                      linear.bias.numpy().copy(), kind)


def out_of_fold(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, kind: str, *, l2: float,
                on_fold=None) -> np.ndarray:
    """Held-out scores for every row: each fold scored by a head fitted on the other folds. A label
    absent from a fold's training rows gets no mass there (its column stays near zero)."""
    out = np.zeros(Y.shape, np.float32)
    for f in np.unique(folds):
        test = folds == f
        train = ~test
        present = (Y[train] > 0).any(axis=0)
        cols = np.flatnonzero(present)
        if len(cols) < 2:
            out[test] = 1.0 / Y.shape[1]
            continue
        y = Y[train][:, cols]
        keep = y.sum(axis=1) > 0
        y = y[keep] / y[keep].sum(axis=1, keepdims=True) if kind == "softmax" else y[keep]
        model = fit(X[train][keep], y, kind, l2=l2)
        out[np.ix_(test, cols)] = model.scores(X[test])
        if on_fold is not None:
            on_fold()
    return out
