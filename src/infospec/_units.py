"""Units of information: measures compute in nats; ``bits=True`` divides by ln 2."""

from __future__ import annotations

import math

import torch

__all__ = ["LN2", "from_nats", "to_nats"]

#: Nats per bit: ``1 bit = ln 2 nats``.
LN2 = math.log(2.0)


def from_nats(value: torch.Tensor, bits: bool) -> torch.Tensor:
    """Return ``value`` (in nats) in bits when ``bits`` is true, otherwise unchanged."""
    return value / LN2 if bits else value


def to_nats(value: torch.Tensor | float, bits: bool) -> torch.Tensor | float:
    """Return ``value`` given in bits (when ``bits`` is true) or nats, in nats."""
    return value * LN2 if bits else value
