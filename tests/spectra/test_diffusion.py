import math

import numpy as np
import pytest
import torch

from infospec import InputError
from infospec.spectra import diffusion_noise_levels


def _g(tau):
    return np.cos((tau + 0.008) / 1.008 * np.pi / 2) ** 2


def test_cosine_schedule_is_the_closed_form_where_beta_is_not_clipped():
    levels = diffusion_noise_levels("cosine", 1000)
    t = levels.timestep.numpy()
    assert t.tolist() == list(range(1, 1001))
    closed = _g(t / 1000) / _g(0.0)  # the product of 1 - beta telescopes
    clipped = t >= np.argmax(1 - _g(t / 1000) / _g((t - 1) / 1000) > 0.999) + 1
    assert clipped.sum() == 1  # only the last step hits beta = 0.999
    np.testing.assert_allclose(levels.alpha_bar.numpy()[~clipped], closed[~clipped], rtol=1e-10)
    assert float(levels.alpha_bar[-1]) == pytest.approx(closed[-2] * 0.001, rel=1e-10)


def test_linear_schedule_of_ddpm():
    levels = diffusion_noise_levels("linear", 1000, timesteps=[1, 500, 1000])
    betas = np.linspace(1e-4, 0.02, 1000)
    ref = np.cumprod(1 - betas)[[0, 499, 999]]
    np.testing.assert_allclose(levels.alpha_bar.numpy(), ref, rtol=1e-12)
    assert float(levels.alpha_bar[-1]) == pytest.approx(4.035e-5, rel=1e-3)  # DDPM's x_T
    # 250 steps: improved-diffusion scales both ends by 1000 / steps
    short = diffusion_noise_levels("linear", 250, timesteps=[1])
    assert float(short.alpha_bar[0]) == pytest.approx(1 - 4e-4, rel=1e-14)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_noise_variance_is_the_inverse_snr_and_increases(schedule):
    levels = diffusion_noise_levels(schedule, 400)
    ab = levels.alpha_bar
    torch.testing.assert_close(levels.noise_var, (1 - ab) / ab, rtol=1e-14, atol=0)
    assert levels.noise_var.dtype == torch.float64 and levels.timestep.dtype == torch.int64
    assert torch.all(torch.diff(levels.noise_var) > 0)
    assert math.isfinite(float(levels.noise_var[-1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(schedule="sigmoid"), "'schedule' parameter of diffusion_noise_levels"),
        (dict(steps=0), "'steps' parameter of diffusion_noise_levels must be an int > 0"),
        (dict(schedule="linear", steps=20), "must be an int > 20 for the linear schedule"),
        (dict(steps=10, timesteps=[0]), r"ints in \[1, 10\]"),
        (dict(steps=10, timesteps=[11]), r"ints in \[1, 10\]"),
        (dict(steps=10, timesteps=[1.5]), r"ints in \[1, 10\]"),
        (dict(steps=10, timesteps=[]), r"ints in \[1, 10\]"),
        (dict(steps=10, timesteps=[[1]]), r"1-D sequence of ints"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        diffusion_noise_levels(**kwargs)


def test_steps_have_an_upper_bound():
    import pytest

    from infospec import InputError
    from infospec.spectra import diffusion_noise_levels

    with pytest.raises(InputError, match=r"'steps' parameter of diffusion_noise_levels must be at"):
        diffusion_noise_levels("cosine", steps=10**20)  # hung: an array of 10**20 steps
    assert len(diffusion_noise_levels("cosine", steps=10**5, timesteps=[1, 10**5]).timestep) == 2
