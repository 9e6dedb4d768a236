"""A deliberately wrong factory for the parity kit: our networks with BatchNorm eps 1e-3."""
from __future__ import annotations

from torch import nn

from engines.models import build as build_correct


def build(name: str) -> nn.Module:
    net = build_correct(name)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 1e-3
    return net
