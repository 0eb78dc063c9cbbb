r"""Framewise power spectra of 1-D signals, and the flatness and entropy of each frame.

:func:`power_spectrogram` is a torch short-time Fourier transform that frames, pads and
windows a signal exactly as ``librosa.stft`` 0.11 does; :func:`frame_flatness` equals
``librosa.feature.spectral_flatness`` with the same arguments (defaults included; to
round-off, about 1e-15 in float64), and :func:`frame_entropy` is the Shannon entropy of
each frame's normalised power spectrum, in bits. Leading axes are a batch (channels,
signals); everything runs on the signal's device (CPU or GPU), in float64.

What librosa 0.11 does (read from its source)
---------------------------------------------
* ``spectral_flatness(y=...)`` takes the *magnitude* :math:`|X|` of ``stft`` (its
  ``_spectrogram`` is called with ``power=1``), then :math:`S = \max(a_{\min}, |X|^p)`,
  and returns :math:`\exp(\overline{\log S}) / \overline{S}` over the frequency axis with
  shape ``(..., 1, t)``. The floor ``amin`` applies to the *powered* value. Its default
  hop is a fixed ``hop_length=512`` (as for every ``librosa.feature`` spectral feature);
  ``stft``'s is ``win_length // 4``. :func:`frame_flatness` and :func:`frame_entropy`
  default to 512, :func:`power_spectrogram` to ``win_length // 4``, each as its peer.
* ``stft``: ``win_length`` defaults to ``n_fft``; the window is
  ``scipy.signal.get_window(window, win_length, fftbins=True)`` (periodic; any name or
  tuple scipy knows), centred in ``n_fft`` samples (``(n_fft - win_length) // 2`` zeros on
  the left); with ``center=True`` the signal is padded by ``n_fft // 2`` samples at each
  end with ``numpy.pad(mode=pad_mode)`` and frame ``t`` starts at ``t * hop_length`` of the
  padded signal, so there are ``1 + (n + 2 (n_fft // 2) - n_fft) // hop_length`` frames;
  with ``center=False`` there are ``1 + (n - n_fft) // hop_length`` and ``n_fft > n`` is
  an error. The frequency axis has ``1 + n_fft // 2`` bins (``rfft``, unnormalised).
* Padding is done in two pieces when the head and tail frames do not overlap: the right
  end is padded from the signal's tail piece alone (from sample
  ``tail_k * hop_length - n_fft // 2`` on). For ``pad_mode`` ``'reflect'`` or
  ``'symmetric'`` and a hop longer than about half a frame, that piece is shorter than the
  pad and numpy reflects it repeatedly, so the last frames differ from a reflection of the
  whole signal. This module reproduces that too (``_pad_index``).

Where this differs from librosa: the pad modes ``'empty'`` (undefined values), ``'wrap'``,
the statistics modes and callables are refused (librosa refuses most of them too);
integer signals are accepted and converted to float64 (librosa refuses them); a float32
signal is computed in float64 (librosa computes in float32, so the two agree to about
1e-6 relative there, to round-off for float64 input).

Beside :func:`infospec.measures.spectral_flatness`, not a ``y=`` overload of it: that
function reads a spectrum (eigenvalues, singular values, power bins) along any axis with
an exact default ``amin=0``; a signal needs framing options, librosa's floor ``1e-10``
and the output shape ``(..., 1, t)``, and :mod:`infospec.measures` sits below
:mod:`infospec.spectra` (it never computes an STFT). :func:`frame_flatness` is that
function's formula on the frequency axis of the spectrogram built here (frequency kept as
the contiguous axis, and not validated again as a user's spectrum would be).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._checks import shown, shown_str
from .._errors import InputError
from .._units import from_nats
from .._validation import (
    as_float_tensor,
    binary_scale,
    check_bool,
    check_choice,
    check_eigenvalues,
    check_finite,
    check_ndim,
    check_nonempty,
    check_positive,
    describe,
)

__all__ = ["frame_entropy", "frame_flatness", "power_spectrogram"]

_PAD_MODES = ("constant", "edge", "linear_ramp", "reflect", "symmetric")
#: ``librosa.feature``'s default hop, for the functions that mirror ``spectral_flatness``.
FEATURE_HOP = 512


def _window(window: Any, win_length: int, n_fft: int, like: torch.Tensor, func: str):
    """The analysis window of length ``n_fft``: ``win_length`` samples centred in zeros."""
    from scipy.signal import get_window

    if isinstance(window, str | tuple):
        try:
            w = get_window(window, win_length, fftbins=True)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"The 'window' parameter of {func} must be a window scipy.signal.get_window "
                f"knows (e.g. 'hann', 'hamming', ('kaiser', 8.0)); got {shown(window)}: {exc}"
            ) from exc
    elif isinstance(window, Callable):
        w = window(win_length)
    else:
        w = window
    w = as_float_tensor(w, "window", func).to(device=like.device, dtype=like.dtype)
    if w.ndim != 1 or w.shape[0] != win_length:
        raise InputError(
            f"The 'window' argument of {func} must be a window name, a callable of the "
            f"length or a 1-D array of win_length = {win_length} samples; got "
            f"{describe(w)}."
        )
    check_finite(w, "window", func)
    left = (n_fft - win_length) // 2
    return torch.nn.functional.pad(w, (left, n_fft - win_length - left))


def _pad_index(n: int, n_fft: int, hop: int, mode: str) -> np.ndarray:
    """Indices into the signal of librosa's centred padding (``numpy.pad`` semantics).

    The right pad is a padding of the tail piece alone when librosa pads head and tail
    separately (see the module docstring); the left pad always equals that of the whole
    signal, since the head piece is longer than the pad (or is the whole signal).
    """
    p = n_fft // 2
    index = np.pad(np.arange(n), (p, p), mode=mode)
    start_k = -(-p // hop)
    tail_k = (n + p - n_fft) // hop + 1
    if p > 0 and tail_k > start_k and tail_k * hop - p + n_fft <= n + p:
        tail = tail_k * hop - p
        index[-p:] = np.pad(np.arange(tail, n), (0, p), mode=mode)[-p:]
    return index


def _centre(x: torch.Tensor, n_fft: int, hop: int, mode: str) -> torch.Tensor:
    """The signal padded by ``n_fft // 2`` samples at each end as ``librosa.stft`` does."""
    p = n_fft // 2
    if p == 0:
        return x
    if mode == "constant":
        return torch.nn.functional.pad(x, (p, p))
    if mode == "linear_ramp":  # numpy: from the edge value to 0 at the outermost sample
        ramp = torch.arange(p, dtype=x.dtype, device=x.device) / p
        return torch.cat([x[..., :1] * ramp, x, x[..., -1:] * ramp.flip(0)], dim=-1)
    index = torch.as_tensor(_pad_index(x.shape[-1], n_fft, hop, mode), device=x.device)
    return x[..., index]


def power_spectrogram(
    y: Any,
    *,
    n_fft: int = 2048,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: Any = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 2.0,
) -> torch.Tensor:
    r"""Framewise spectrum :math:`|X[f, t]|^p` of a signal, framed exactly as librosa.

    .. math::

        X[f, t] = \sum_{m=0}^{N-1} w[m]\, \tilde y[t h + m]\, e^{-2\pi i f m / N},
        \qquad f = 0, \dots, \lfloor N/2 \rfloor

    with :math:`N` = ``n_fft``, :math:`h` = ``hop_length``, :math:`w` the window
    (``win_length`` samples centred in :math:`N`) and :math:`\tilde y` the signal, padded
    by :math:`\lfloor N/2 \rfloor` samples at each end when ``center`` (so frame
    :math:`t` is centred on sample :math:`t h`). Unnormalised DFT, as ``librosa.stft``:
    ``power_spectrogram(y, power=1)`` is ``numpy.abs(librosa.stft(y))``.

    Parameters
    ----------
    y : tensor or array_like, shape (..., n)
        Real signal along the last axis; leading axes (channels, a batch) are kept.
        Integer samples are converted to float64 as they are (no rescaling); the unit of
        the output is the unit of ``y`` to the power ``power``.
    n_fft : int > 0, default 2048
        Frame length and DFT size.
    hop_length : int > 0 or None, default None
        Samples between frame starts; None: ``win_length // 4`` (at least 1), as
        ``librosa.stft``.
    win_length : int in [1, n_fft] or None, default None
        Window length; None: ``n_fft``. The window is centred in the frame with zeros.
    window : str, tuple, callable or array, default 'hann'
        ``scipy.signal.get_window(window, win_length, fftbins=True)`` for a name or tuple
        (periodic), ``window(win_length)`` for a callable, or the ``win_length`` window
        samples themselves.
    center : bool, default True
        Pad the signal so that frames are centred on ``t * hop_length``.
    pad_mode : {'constant', 'edge', 'linear_ramp', 'reflect', 'symmetric'}, default 'constant'
        ``numpy.pad`` mode of the centring pad (zeros by default, as librosa).
    power : float > 0, default 2.0
        Exponent of the magnitude: 2 for power, 1 for magnitude.

    Returns
    -------
    spectrogram : torch.Tensor, shape (..., 1 + n_fft // 2, t)
        float64 (float32 for a lower-precision input that requires grad, which stays
        differentiable), on ``y``'s device.
        ``t = 1 + (n + 2 (n_fft // 2) - n_fft) // hop_length`` when centred,
        ``1 + (n - n_fft) // hop_length`` otherwise.

    Raises
    ------
    InputError
        If ``y`` is empty, a scalar, complex or not finite; if ``n_fft``, ``hop_length`` or
        ``win_length`` is not a positive int or ``win_length > n_fft``; if ``window`` or
        ``pad_mode`` is unknown or the window array has the wrong length; if
        ``n_fft`` is longer than both the signal and 2**16 samples; if ``center`` is not
        a bool or ``power`` is not > 0.

    References
    ----------
    B. McFee et al., librosa 0.11.0, ``librosa.stft``; J. B. Allen, "Short term spectral
    analysis, synthesis, and modification by discrete Fourier transform", IEEE TASSP 25(3),
    1977.

    Examples
    --------
    >>> import torch
    >>> from infospec.spectra import power_spectrogram
    >>> S = power_spectrogram(torch.ones(2, 1000), n_fft=64)
    >>> tuple(S.shape)  # (channels, 1 + 64 // 2, 1 + 1000 // 16)
    (2, 33, 63)
    """
    return _frames(
        y,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        power=power,
    ).transpose(-1, -2)


#: Longest frame accepted beyond the signal's length (padded; see :func:`_frames`).
_LONGEST_PADDED_FRAME = 2**16


def _frames(
    y: Any,
    *,
    n_fft: int,
    hop_length: int | None,
    win_length: int | None,
    window: Any,
    center: bool,
    pad_mode: str,
    power: float,
    caller: str = "power_spectrogram",
) -> torch.Tensor:
    """:func:`power_spectrogram` with frequency last, shape (..., t, 1 + n_fft // 2).

    ``caller`` names the public function in the error raised when :math:`|X|^p` leaves
    float64.
    """
    func = "power_spectrogram"
    n_fft = check_positive(n_fft, "n_fft", func, integer=True)
    if win_length is None:
        win_length = n_fft
    elif check_positive(win_length, "win_length", func, integer=True) > n_fft:
        raise InputError(
            f"The 'win_length' parameter of {func} must be an int in [1, {n_fft}] (n_fft). "
            f"Got {shown_str(win_length)} instead."
        )
    if hop_length is None:
        hop = max(int(win_length) // 4, 1)
    else:
        hop = check_positive(hop_length, "hop_length", func, integer=True)
    check_bool(center, "center", func)
    check_choice(pad_mode, "pad_mode", func, _PAD_MODES)
    power = check_positive(power, "power", func)
    x = as_float_tensor(y, "y", func)
    check_ndim(x, "y", func, min_ndim=1, expected="at least 1 dimension (..., samples)")
    check_nonempty(x, "y", func)
    check_finite(x, "y", func)
    if n_fft > max(x.shape[-1], _LONGEST_PADDED_FRAME):
        # a frame longer than the signal is mostly padding (librosa pads it when centred,
        # and so does this up to 2**16 samples); beyond, its size is only what was asked
        # (n_fft = 10**8 took 27 s and gigabytes on 4096 samples)
        raise InputError(
            f"The 'n_fft' parameter of {func} is {n_fft}, longer than the signal "
            f"({x.shape[-1]} samples along the last axis) and than {_LONGEST_PADDED_FRAME} "
            f"samples; pass n_fft <= {max(x.shape[-1], _LONGEST_PADDED_FRAME)}."
        )
    if center:
        x = _centre(x, n_fft, hop, pad_mode)
    elif x.shape[-1] < n_fft:
        raise InputError(
            f"The 'y' argument of {func} has {x.shape[-1]} samples, fewer than n_fft = "
            f"{n_fft}, and center=False leaves no complete frame. Pass center=True or a "
            f"smaller n_fft."
        )
    w = _window(window, int(win_length), n_fft, x, func)
    # frames along the last axis but one, frequency last: (..., t, n_fft) -> (..., t, F),
    # reduced along the contiguous axis; the same frames as torch.stft(center=False)
    # in units of c ~ max |y| (a power of two: exact), so the squares of the coefficients neither
    # overflow nor underflow before the power; c^p is applied last, in two halves
    c = binary_scale(x)
    hop = min(hop, x.shape[-1])  # a longer hop gives the same single frame (10**30 overflowed)
    coeff = torch.fft.rfft((x / c).unfold(-1, n_fft, hop) * w, dim=-1)
    power_2 = coeff.real.square() + coeff.imag.square()
    if power == 2.0:
        out = power_2 * c * c
    elif power == 1.0:
        out = torch.sqrt(power_2) * c
    else:
        half = c ** (power / 2)
        out = power_2 ** (power / 2) * half * half
    return _check_overflow(out, caller)


def _floored(func: str, y: Any, S: Any, amin: float, power: float, framing: tuple) -> torch.Tensor:
    """``max(amin, |STFT(y)|^power)``, or of a magnitude ``S``; frequency last (..., t, F).

    ``framing`` is ``(n_fft, hop_length, win_length, window, center, pad_mode)``.
    """
    if (y is None) == (S is None):
        raise InputError(
            f"{func} needs exactly one of 'y' (a signal, shape (..., n)) and 'S' (a magnitude "
            f"spectrogram, shape (..., 1 + n_fft // 2, t)); got "
            f"{'both' if y is not None else 'neither'}."
        )
    amin = check_positive(amin, "amin", func)
    power = check_positive(power, "power", func)
    if y is not None:
        names = ("n_fft", "hop_length", "win_length", "window", "center", "pad_mode")
        framed = _frames(y, power=power, caller=func, **dict(zip(names, framing, strict=True)))
        return framed.clamp_min(amin)
    s = as_float_tensor(S, "S", func)
    check_ndim(s, "S", func, min_ndim=2, expected="at least 2 dimensions (..., frequency, time)")
    s = check_eigenvalues(s, "S", func).transpose(-1, -2)
    return (s if power == 1.0 else s**power).clamp_min(amin)


def _check_overflow(out: torch.Tensor, func: str) -> torch.Tensor:
    """The per-frame result, or an error if a power overflowed float (``|X|^p = inf``)."""
    if not bool(torch.isfinite(out).all()):
        raise InputError(
            f"The 'y' (or 'S') argument of {func} overflows {str(out.dtype)[6:]} when raised to "
            f"the power 'power' (|X|^p is infinite in some frame). Rescale the signal."
        )
    return out


def frame_flatness(
    y: Any = None,
    *,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = FEATURE_HOP,
    win_length: int | None = None,
    window: Any = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    amin: float = 1e-10,
    power: float = 2.0,
) -> torch.Tensor:
    r"""Spectral flatness of every frame of a signal, equal to librosa's.

    .. math::

        \mathrm{SFM}[t] = \frac{\exp\big(\frac1F \sum_f \log S[f, t]\big)}
                               {\frac1F \sum_f S[f, t]},
        \qquad S[f, t] = \max\big(a_{\min}, |X[f, t]|^{p}\big)

    over the :math:`F = 1 + \lfloor N/2 \rfloor` bins of :func:`power_spectrogram`;
    :func:`infospec.measures.spectral_flatness` of that spectrogram along its frequency
    axis. This is ``librosa.feature.spectral_flatness(y=y, ...)`` with the same arguments
    and defaults.

    Parameters
    ----------
    y : tensor or array_like, shape (..., n), optional
        Real signal; leading axes (channels, a batch) are kept.
    S : tensor or array_like, shape (..., 1 + n_fft // 2, t), optional
        A precomputed *magnitude* spectrogram instead of ``y`` (raised to ``power`` here,
        as librosa does). Exactly one of ``y`` and ``S``.
    n_fft, win_length, window, center, pad_mode
        Framing of ``y``, as in :func:`power_spectrogram` (ignored with ``S``).
    hop_length : int > 0, default 512
        Samples between frames (librosa.feature's fixed default, not ``win_length // 4``).
    amin : float > 0, default 1e-10
        Floor on :math:`|X|^p` (in the unit of ``y`` to the power ``power``): a silent
        frame has :math:`S = a_{\min}` in every bin, hence flatness 1.
    power : float > 0, default 2.0
        Exponent of the magnitude (2: power spectrum).

    Returns
    -------
    flatness : torch.Tensor, shape (..., 1, t)
        Dimensionless, in (0, 1]; 1 for a flat (white or silent) frame, near 0 for a tone.
        Invariant to a common gain of the signal while every bin stays above ``amin``.

    Raises
    ------
    InputError
        If both or neither of ``y`` and ``S`` are given, ``S`` is negative or not finite,
        ``amin`` or ``power`` is not > 0, or a framing option is invalid (see
        :func:`power_spectrogram`).

    References
    ----------
    S. Dubnov, "Generalization of spectral flatness measure for non-Gaussian linear
    processes", IEEE Signal Processing Letters 11(8), 2004. B. McFee et al., librosa 0.11.0,
    ``librosa.feature.spectral_flatness``.

    Examples
    --------
    >>> import torch
    >>> from infospec.spectra import frame_flatness
    >>> t = torch.arange(8192, dtype=torch.float64)
    >>> tone = torch.sin(2 * torch.pi * 440 * t / 22050)
    >>> float(frame_flatness(tone)[0, 8]) < 1e-3
    True
    >>> round(float(frame_flatness(torch.zeros(4096))[0, 0]), 12)  # silence: amin everywhere
    1.0
    """
    func = "frame_flatness"
    framing = (n_fft, hop_length, win_length, window, center, pad_mode)
    floored = _floored(func, y, S, amin, power, framing)
    # the formula of infospec.measures.spectral_flatness, along the contiguous axis
    log_ratio = torch.log(floored).mean(dim=-1) - torch.log(floored.mean(dim=-1))
    return _check_overflow(torch.exp(log_ratio), func).unsqueeze(-2)


def frame_entropy(
    y: Any = None,
    *,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = FEATURE_HOP,
    win_length: int | None = None,
    window: Any = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    amin: float = 1e-10,
    power: float = 2.0,
    bits: bool = True,
    normalize: bool = False,
) -> torch.Tensor:
    r"""Spectral entropy of every frame: the Shannon entropy of its normalised spectrum.

    .. math::

        H[t] = -\sum_{f} q[f, t] \log_2 q[f, t], \qquad
        q[f, t] = \frac{S[f, t]}{\sum_{f'} S[f', t]}, \quad
        S[f, t] = \max\big(a_{\min}, |X[f, t]|^{p}\big)

    with the spectrogram and floor of :func:`frame_flatness`. :math:`0 \le H \le \log_2 F`
    for :math:`F = 1 + \lfloor N/2 \rfloor` bins: :math:`\log_2 F` for a flat (white or
    silent) frame, small for a tone whose energy sits in a few bins.

    Parameters
    ----------
    y, S, n_fft, hop_length, win_length, window, center, pad_mode, amin, power
        As in :func:`frame_flatness` (``hop_length`` 512 by default).
    bits : bool, default True
        Entropy in bits (:math:`\log_2`); False: nats.
    normalize : bool, default False
        Divide by :math:`\log F`: a dimensionless entropy in [0, 1] (``bits`` is then
        irrelevant; 0 for a single bin).

    Returns
    -------
    entropy : torch.Tensor, shape (..., 1, t)
        In bits (nats with ``bits=False``, in [0, 1] with ``normalize=True``). Invariant
        to a common gain while every bin stays above ``amin``.

    Raises
    ------
    InputError
        As :func:`frame_flatness`; also if ``bits`` or ``normalize`` is not a bool.

    References
    ----------
    H. Misra, S. Ikbal, H. Bourlard and H. Hermansky, "Spectral entropy based feature for
    robust ASR", ICASSP 2004. C. E. Shannon, "A mathematical theory of communication",
    Bell System Technical Journal 27, 1948.

    Examples
    --------
    >>> import math, torch
    >>> from infospec.spectra import frame_entropy
    >>> h = frame_entropy(torch.zeros(4096), n_fft=1024)  # flat: log2(513) bits
    >>> round(float(h[0, 0]), 9) == round(math.log2(513), 9)
    True
    """
    func = "frame_entropy"
    check_bool(bits, "bits", func)
    check_bool(normalize, "normalize", func)
    framing = (n_fft, hop_length, win_length, window, center, pad_mode)
    spec = _floored(func, y, S, amin, power, framing)
    total = spec.sum(dim=-1)  # H = log Z - sum_f S log S / Z, with Z = sum_f S
    h = _check_overflow(torch.log(total) - (spec * torch.log(spec)).sum(dim=-1) / total, func)
    h = h.unsqueeze(-2)
    if normalize:
        bins = spec.shape[-1]
        return h / float(np.log(bins)) if bins > 1 else torch.zeros_like(h)
    return from_nats(h, bits)
