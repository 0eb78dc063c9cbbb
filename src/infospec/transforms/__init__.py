"""What acts on spectra: transform coding of vectors (KLT, reverse water-filling, a range coder).

:class:`TransformCoder` codes vectors with the Karhunen–Loève transform of their
covariance, a water-filling bit allocation and an entropy-coded bitstream;
:func:`rate_distortion_curve` measures its operational rate–distortion curve against the
Gaussian bound of the same covariance; :func:`truncation_curve` compares keeping the
first ``k`` coordinates (a Matryoshka-style prefix code) with keeping the first ``k`` KLT
components.

Acting on models: :func:`compress` replaces linear layers by low-rank products (SVD-LLM's
whitened truncation, ranks allocated across layers at a parameter budget) and
:func:`load_compressed` rebuilds a saved result; :func:`svd_smooth`, :func:`svd_sharpen`
and :func:`rmt_project` are WeightWatcher's and RMT-KD's spectral interventions.
"""

from .coding import ENTROPY_MODELS, TransformCoder, empirical_entropy_bits
from .curves import rate_distortion_curve, truncation_curve
from .lowrank import CompressionResult, compress, load_compressed
from .smoothing import ProjectedOutput, rmt_project, svd_sharpen, svd_smooth

__all__ = [
    "ENTROPY_MODELS",
    "CompressionResult",
    "ProjectedOutput",
    "TransformCoder",
    "compress",
    "empirical_entropy_bits",
    "load_compressed",
    "rate_distortion_curve",
    "rmt_project",
    "svd_sharpen",
    "svd_smooth",
    "truncation_curve",
]
