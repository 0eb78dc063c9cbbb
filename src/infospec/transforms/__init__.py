"""What acts on spectra: transform coding of vectors (KLT, reverse water-filling, a range coder).

:class:`TransformCoder` codes vectors with the Karhunen–Loève transform of their
covariance, a water-filling bit allocation and an entropy-coded bitstream;
:func:`rate_distortion_curve` measures its operational rate–distortion curve against the
Gaussian bound of the same covariance; :func:`truncation_curve` compares keeping the
first ``k`` coordinates (a Matryoshka-style prefix code) with keeping the first ``k`` KLT
components.
"""

from .coding import ENTROPY_MODELS, TransformCoder, empirical_entropy_bits
from .curves import rate_distortion_curve, truncation_curve

__all__ = [
    "ENTROPY_MODELS",
    "TransformCoder",
    "empirical_entropy_bits",
    "rate_distortion_curve",
    "truncation_curve",
]
