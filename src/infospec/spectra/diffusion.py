r"""Noise levels of the DDPM diffusion schedules, as variances against the clean image.

A diffusion model's forward process is :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 +
\sqrt{1 - \bar\alpha_t}\, \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`.
Dividing by :math:`\sqrt{\bar\alpha_t}` gives :math:`x_0 + \sigma_t \varepsilon` with

.. math::

    \sigma_t^2 = \frac{1 - \bar\alpha_t}{\bar\alpha_t},

the inverse signal-to-noise ratio: the white-noise floor that
:func:`infospec.spectra.noise_cutoff_frequency` and
:func:`infospec.spectra.noise_level_information` compare with an image's power spectrum
(both on the pixel scale of :math:`x_0`, which DDPM takes in [-1, 1]).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .._checks import shown
from .._errors import InputError
from .._validation import check_choice, check_positive

__all__ = ["DiffusionNoise", "diffusion_noise_levels"]

#: Most diffusion steps accepted: the schedule is computed over every step.
MAX_STEPS = 100_000

_SCHEDULES = ("cosine", "linear")


class DiffusionNoise(NamedTuple):
    """Noise levels of a schedule at the chosen timesteps.

    Attributes
    ----------
    timestep : torch.Tensor, shape (L,)
        Timesteps :math:`t` in [1, steps] (int64): :math:`t` noising steps applied.
    alpha_bar : torch.Tensor, shape (L,)
        :math:`\\bar\\alpha_t = \\prod_{s \\le t} (1 - \\beta_s)`, float64.
    noise_var : torch.Tensor, shape (L,)
        :math:`\\sigma_t^2 = (1 - \\bar\\alpha_t)/\\bar\\alpha_t`, float64.
    """

    timestep: torch.Tensor
    alpha_bar: torch.Tensor
    noise_var: torch.Tensor


def _betas(schedule: str, steps: int) -> np.ndarray:
    if schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)

    def f(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array(
        [min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)],
        dtype=np.float64,
    )


def diffusion_noise_levels(
    schedule: str = "cosine", steps: int = 1000, *, timesteps: Any = None
) -> DiffusionNoise:
    r"""The noise variances :math:`\sigma_t^2 = (1 - \bar\alpha_t)/\bar\alpha_t` of a schedule.

    ``'linear'`` (Ho et al. 2020): :math:`\beta_t` linear from :math:`10^{-4}` to 0.02 over
    1000 steps (both scaled by 1000/steps, as improved-diffusion does). ``'cosine'`` (Nichol
    & Dhariwal 2021): :math:`\bar\alpha(\tau) = g(\tau)/g(0)`,
    :math:`g(\tau) = \cos^2\!\big(\frac{\tau + 0.008}{1.008} \frac{\pi}{2}\big)`, through
    :math:`\beta_t = \min(1 - \bar\alpha(t/T)/\bar\alpha((t-1)/T),\ 0.999)`. Then
    :math:`\bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)`.

    Parameters
    ----------
    schedule : {'cosine', 'linear'}, default 'cosine'
        The beta schedule.
    steps : int > 0, default 1000
        Number of diffusion steps :math:`T`.
    timesteps : sequence of int in [1, steps], optional
        The timesteps returned; default all, 1 to ``steps``.

    Returns
    -------
    DiffusionNoise
        ``timestep``, ``alpha_bar`` and ``noise_var``, each of shape (L,).

    Raises
    ------
    InputError
        If ``schedule`` is unknown, ``steps`` is not an int in [1, 100000] (> 20 for ``'linear'``,
        whose last beta :math:`0.02 \cdot 1000/T` must stay below 1), or a timestep is not
        an int in [1, steps].

    References
    ----------
    J. Ho, A. Jain and P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
    A. Nichol and P. Dhariwal, "Improved denoising diffusion probabilistic models", ICML 2021.

    Examples
    --------
    >>> from infospec.spectra import diffusion_noise_levels
    >>> levels = diffusion_noise_levels("linear", timesteps=[1])
    >>> round(float(levels.noise_var[0]), 8)  # beta_1 / (1 - beta_1)
    0.00010001
    """
    func = "diffusion_noise_levels"
    check_choice(schedule, "schedule", func, _SCHEDULES)
    steps = check_positive(steps, "steps", func, integer=True)
    if steps > MAX_STEPS:  # the schedule is an array of `steps` values (10**20 hung)
        raise InputError(
            f"The 'steps' parameter of {func} must be at most {MAX_STEPS} (diffusion models "
            f"use 1000 to 4000). Got {shown(steps)} instead."
        )
    if schedule == "linear" and steps <= 20:
        raise InputError(
            f"The 'steps' parameter of {func} must be an int > 20 for the linear schedule: "
            f"its last beta is 0.02 * 1000 / steps = {20 / steps:g}, and a beta >= 1 leaves "
            f"no signal (alpha_bar <= 0). Got {steps}; use more steps or "
            f"schedule='cosine'."
        )
    if timesteps is None:
        chosen = np.arange(1, steps + 1)
    else:
        chosen = np.asarray(timesteps)
        if (
            chosen.ndim != 1
            or chosen.size == 0
            or chosen.dtype.kind not in "iu"
            or chosen.min() < 1
            or chosen.max() > steps
        ):
            raise InputError(
                f"The 'timesteps' parameter of {func} must be a 1-D sequence of ints in "
                f"[1, {steps}] (steps). Got {shown(timesteps)} instead."
            )
    alpha_bar = np.cumprod(1.0 - _betas(schedule, steps))[chosen - 1]
    return DiffusionNoise(
        timestep=torch.as_tensor(chosen, dtype=torch.int64),
        alpha_bar=torch.as_tensor(alpha_bar),
        noise_var=torch.as_tensor((1.0 - alpha_bar) / alpha_bar),
    )
