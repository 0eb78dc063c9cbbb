r"""Heavy-tail power laws of weight spectra: WeightWatcher's ``alpha``.

How heavy is the tail of the eigenvalues :math:`\lambda_i` of :math:`W^\top W` (the squared
singular values of a weight matrix)? :func:`fit_power_law` fits :math:`p(\lambda) \propto
\lambda^{-\alpha}` above a threshold :math:`\lambda_{\min}` chosen by the
Kolmogorov-Smirnov rule of Clauset, Shalizi and Newman (2009), the exponent that
WeightWatcher reports as ``alpha``. The noise-bulk question is in :mod:`.marchenko_pastur`.

What WeightWatcher 0.7.7 does for ``alpha`` (read from its source)
------------------------------------------------------------------
With its defaults (``pl_package='ww'``, ``xmax=None``, ``fix_fingers=False``),
``WeightWatcher.analyze()`` does *not* call the ``powerlaw`` package for the fit; it uses
its own class ``WW_powerlaw.WWFit``:

* eigenvalues are ``sv**2`` of the unnormalised weight matrix (``normalize`` was removed in
  0.6.5), and only those ``> 1e-5`` (``EVALS_THRESH``, absolute) are fitted;
* the fit is continuous and **untruncated** (``xmax=None``): for every candidate
  :math:`x_{\min}` the exponent is the closed-form maximum-likelihood estimate
  :math:`\hat\alpha = 1 + n / \sum_{x_j \ge x_{\min}} \log(x_j / x_{\min})`;
* the candidates are *all* sorted eigenvalues except the largest (ties are not merged: a
  repeated value is a candidate once per copy, with the tail starting at that copy);
* the KS distance of a candidate is :math:`D = \max_j |F(x_{(j)}) - j/n|`, j = 0..n-1, over
  the sorted tail, with :math:`F(x) = 1 - (x/x_{\min})^{1-\alpha}`: the fitted CDF against
  the empirical CDF's left limits only (the ``powerlaw`` package computes the same
  quantity for distinct values);
* the chosen :math:`x_{\min}` is the first candidate with the smallest :math:`D`;
  ``sigma`` is :math:`(\hat\alpha - 1)/\sqrt{n}` and ``num_pl_spikes`` the tail size;
* when fewer than 20 eigenvalues are fitted it switches to a small-sample rule: a
  bias-corrected :math:`\hat\alpha = 1 + (n-1)/\sum\log(x_j/x_{\min})` and only candidates
  with :math:`n \ge 8` (the whole spectrum when there are fewer than 8 eigenvalues). Its
  ``fit_powerlaw_smallN`` ranks them by :math:`D - 0.868/\sqrt{n}`, but ``WWFit.__init__``
  then overwrites that choice with the first smallest :math:`D` among them, so the
  smallest :math:`D` is what it reports (checked against WeightWatcher 0.7.7 itself).
  Below 8 eigenvalues its ``sigma`` is :math:`-1/\sqrt{N}` (the standard errors are
  computed before the exponent is filled in); we report :math:`(\hat\alpha-1)/\sqrt{n}`.

Its other paths: ``xmax='force'`` or ``fix_fingers`` require ``pl_package='powerlaw'``,
which calls ``powerlaw.Fit(data, xmax=..., distribution=...)``; with ``powerlaw`` 2.0 that
call raises ``TypeError`` (``Fit`` has no ``distribution`` argument), which WeightWatcher
catches and reports as a failed fit. An integer ``xmax=k`` drops the top ``k`` eigenvalues.

What we do
----------
:func:`fit_power_law` reproduces the default above exactly (same threshold, candidates,
estimator, KS distance, tie-breaking, small-sample rule), vectorised over the candidates,
so our ``alpha`` can be compared with WeightWatcher's. It differs only outside that
default: a user-given ``xmin`` is used as is (WeightWatcher's own ``fit_powerlaw(xmin=...)``
moves it to the nearest eigenvalue and still scans the candidates above it; ``analyze()``
never passes one), and ``xmax`` fits a power law truncated at ``xmax`` by maximum
likelihood (the exponent then solves a 1-D equation; the KS distance uses the truncated
CDF). The ``powerlaw`` package (2.0) computes the same untruncated estimate with two
differences: it scans unique values below the two largest, and its default range
``alpha`` in (0, 3) rejects steeper tails; widen it with ``parameter_ranges={'alpha': [1,
100]}`` to compare. With ``xmax`` it maximises the truncated likelihood numerically only
when the untruncated closed form lies outside (1.5, 3]; inside that range it returns the
untruncated closed form, which is biased for a truncated tail (ours is the truncated
maximum-likelihood estimate throughout).

References
----------
A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical data",
SIAM Review 51(4), 2009.
C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks:
evidence from random matrix theory and implications for learning", JMLR 22(165), 2021.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from .._checks import shown
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_choice,
    check_eigenvalues,
    check_ndim,
    check_positive,
    describe,
)
from .marchenko_pastur import _is_number

__all__ = ["WW_EIGENVALUE_THRESHOLD", "PowerLawFit", "fit_power_law"]

#: WeightWatcher's ``EVALS_THRESH``: eigenvalues at or below it are not fitted.
WW_EIGENVALUE_THRESHOLD = 1e-5
#: WeightWatcher switches to its small-sample rule below this many fitted eigenvalues.
_WW_SMALL_N = 20
#: Smallest tail a candidate may have under the small-sample rule.
_WW_SMALL_N_MIN_TAIL = 8
#: Entries per block of the (candidates x tail) KS matrix on the CPU: 1 MiB in float64,
#: which stays in a core's L2 cache through the block's dozen passes (a 4096-value fit took
#: 0.091 s with it against 0.123 s with 8 MiB blocks, one thread). On a GPU, where each
#: pass is a kernel launch, blocks are larger (:data:`_KS_BLOCK_ELEMENTS_DEVICE`).
_KS_BLOCK_ELEMENTS = 1 << 17
_KS_BLOCK_ELEMENTS_DEVICE = 1 << 22
#: Column stride of the grid that bounds every candidate's KS distance (:func:`_ks_argmin`).
_KS_STRIDE = 6
#: Slack of those bounds for the rounding of the fitted CDF (far above it, far below a KS step).
_KS_MARGIN = 1e-9
#: Block entries a split of rows by width must save to be worth a block's fixed cost.
_KS_SPLIT_ELEMENTS = 1 << 14


class PowerLawFit(NamedTuple):
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    alpha : torch.Tensor, shape ()
        Exponent of :math:`p(\\lambda) \\propto \\lambda^{-\\alpha}` on the tail.
    xmin : torch.Tensor, shape ()
        Start of the tail (an eigenvalue when scanned, the given value otherwise).
    ks_distance : torch.Tensor, shape ()
        KS distance :math:`\\max_j |F(x_{(j)}) - j/n|` between the fitted CDF and the
        tail's empirical CDF (left limits), in [0, 1]; WeightWatcher's ``D``.
    sigma : torch.Tensor, shape ()
        Asymptotic standard error of ``alpha``: :math:`(\\alpha - 1)/\\sqrt{n}` untruncated
        (WeightWatcher's ``sigma``); the Fisher-information value when truncated.
    num_tail : int
        Number of eigenvalues in the fitted tail, :math:`n` (WeightWatcher's
        ``num_pl_spikes``, unless eigenvalues are tied at ``xmin``).
    xmax : torch.Tensor, shape ()
        Upper truncation point; ``inf`` for the untruncated fit.
    """

    alpha: torch.Tensor
    xmin: torch.Tensor
    ks_distance: torch.Tensor
    sigma: torch.Tensor
    num_tail: int
    xmax: torch.Tensor


def _truncated_ratio(v: torch.Tensor) -> torch.Tensor:
    """h(v) = 1/v - 1/(e^v - 1): decreasing from 1 (v -> -inf) to 0 (v -> inf), h(0) = 1/2."""
    small = v.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(v), v)
    series = 0.5 - v / 12 + v**3 / 720 - v**5 / 30240
    return torch.where(small, series, 1 / safe - 1 / torch.expm1(safe))


def _solve_truncated(ratio: torch.Tensor) -> torch.Tensor:
    """Solve h(v) = ratio for v, elementwise, ratio in (0, 1), by bisection."""
    lo = -1 / (1 - ratio) - 1
    hi = 1 / ratio + 1
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        go_right = _truncated_ratio(mid) > ratio
        lo = torch.where(go_right, mid, lo)
        hi = torch.where(go_right, hi, mid)
        if bool(((hi - lo) <= 1e-15 * (1 + hi.abs())).all()):
            break
    return 0.5 * (lo + hi)


def _truncated_fisher(v: torch.Tensor) -> torch.Tensor:
    """Fisher information per point of u = alpha - 1, over t^2: 1/v^2 - 1/(4 sinh^2(v/2))."""
    small = v.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(v), v)
    exact = 1 / safe**2 - 1 / (4 * torch.sinh(safe / 2) ** 2)
    return torch.where(small, 1 / 12 - v**2 / 240 + v**4 / 6048, exact)


def _tail_cdf(
    log_ratio: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, span: torch.Tensor | None
) -> torch.Tensor:
    """Power-law CDF at log(x / xmin): untruncated when ``v`` is None, else truncated."""
    if v is None:
        return -torch.expm1(-u * log_ratio)
    # (1 - e^{-v s}) / (1 - e^{-v}) with s = log(x/xmin) / log(xmax/xmin) in [0, 1]; for
    # v < 0 it is rewritten as e^{-|v|(1-s)} (1 - e^{-|v| s}) / (1 - e^{-|v|}) (no overflow).
    share = (log_ratio / span).clamp(0.0, 1.0)
    size = v.abs()
    zero = size == 0
    safe = torch.where(zero, torch.ones_like(size), size)
    base = torch.expm1(-safe * share) / torch.expm1(-safe)
    base = torch.where(v >= 0, base, torch.exp(-safe * (1 - share)) * base)
    return torch.where(zero, share, base)


def _ks_rows(
    logs: torch.Tensor,
    rows: torch.Tensor,
    cols: int | torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor | None,
    span: torch.Tensor | None,
) -> torch.Tensor:
    """KS distances max_j |F(x_j) - (j - i)/n_i| of candidates ``rows``, over columns ``cols``.

    ``rows`` (sorted indices) and ``u``, ``v``, ``span`` (their parameters) have one entry
    per candidate; ``cols`` is an int ``c`` (every column j >= c) or sorted column indices.
    Works on the (rows x columns) block with tensor ops, in place; callers bound its size.
    Entries with j <= i get log-ratio 0 and step 0, hence a gap of exactly 0; each entry is
    the same float operation on the same numbers whichever block or columns it is in.
    """
    total = logs.numel()
    dtype = logs.dtype
    if isinstance(cols, int):
        index = torch.arange(cols, total, device=logs.device)
        at = logs[cols:]
    else:
        index, at = cols, logs.index_select(0, cols)
    step = (index[None, :] - rows[:, None]).clamp_(min=0).to(dtype)  # j - i
    step.div_((total - rows).to(dtype)[:, None])  # (j - i) / n_i
    log_ratio = (at[None, :] - logs.index_select(0, rows)[:, None]).clamp_(min=0)
    if v is None:
        model = log_ratio.mul_(-u[:, None]).expm1_().neg_()  # 1 - (x_j / x_i)^(1 - alpha)
    else:
        model = _tail_cdf(log_ratio, u[:, None], v[:, None], span[:, None])
    return model.sub_(step).abs_().amax(dim=1)


def _ks_all(
    logs: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor | None,
    span: torch.Tensor | None,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> torch.Tensor:
    """KS distance of every candidate (``rows``, default 0..len(u)-1), in bounded blocks.

    ``u``, ``v`` and ``span`` are the parameters of the candidates in ``rows``. With
    ``cols`` (sorted column indices), the maximum is over those columns only: a lower
    bound of the distance (see :func:`_ks_argmin`).
    """
    if rows is None:
        rows = torch.arange(u.numel(), device=logs.device)
    count = rows.numel()
    total = logs.numel()
    out = torch.empty(count, dtype=logs.dtype, device=logs.device)
    block = _KS_BLOCK_ELEMENTS if logs.device.type == "cpu" else _KS_BLOCK_ELEMENTS_DEVICE
    firsts = rows.tolist()
    pos = 0
    while pos < count:
        first = firsts[pos]  # columns j < first give gaps of 0 for every row of the block
        if cols is None:
            block_cols: int | torch.Tensor = first
            width = total - first
        else:
            block_cols = cols[int(torch.searchsorted(cols, first)) :]
            width = block_cols.numel()
        stop = min(count, pos + max(1, block // max(1, width)))
        if width > 2 * _KS_STRIDE:
            # rows of half the width or less start a block of their own where that saves
            # more than a block's fixed cost (a dozen tensor calls)
            half = int(torch.searchsorted(rows, first + width // 2, right=True))
            if pos < half < stop and (stop - half) * width >= _KS_SPLIT_ELEMENTS:
                stop = half
        sl = slice(pos, stop)
        out[sl] = _ks_rows(
            logs,
            rows[sl],
            block_cols,
            u[sl],
            None if v is None else v[sl],
            None if span is None else span[sl],
        )
        pos = stop
    return out


def _ks_argmin(logs: torch.Tensor, u: torch.Tensor) -> tuple[int, torch.Tensor]:
    r"""The first candidate of smallest KS distance (untruncated law), and that distance.

    Exactly ``argmin`` of :func:`_ks_all` (the same index and the same float), at a
    fraction of the cost: the distances are first bounded from a grid of every
    :data:`_KS_STRIDE`-th column, then computed in full only for the candidates the bounds
    cannot rule out. Both :math:`F_i(x_j)` and the step :math:`E_{ij} = (j-i)/n_i` are
    non-decreasing in :math:`j`, so between two evaluated columns :math:`a < j < b`

    .. math::

        F_j - E_j \le (F_b - E_b) + (E_b - E_a),\qquad
        E_j - F_j \le (E_a - F_a) + (E_b - E_a),

    and with :math:`b - a \le s` (the column :math:`j = i`, of gap 0, counts as
    evaluated) the grid's maximum :math:`\ell_i` satisfies :math:`\ell_i \le D_i \le
    \ell_i + s/n_i`. A candidate with :math:`\ell_i > \min_k (\ell_k + s/n_k)` has
    :math:`D_i > \min_k D_k` and cannot be the minimum (a margin of :math:`10^{-9}` covers
    the rounding of :math:`F`'s monotonicity). The survivors, usually a few dozen of
    hundreds, are computed exactly, in index order, so the first minimum is kept.
    """
    count = u.numel()
    total = logs.numel()
    stride = _KS_STRIDE
    if count <= 4 * stride:
        ks = _ks_all(logs, u, None, None)
        best = int(torch.argmin(ks))
        return best, ks[best]
    device = logs.device
    grid = torch.arange(stride - 1, total, stride, device=device)
    if int(grid[-1]) != total - 1:
        grid = torch.cat([grid, torch.tensor([total - 1], device=device)])
    low = _ks_all(logs, u, None, None, cols=grid)
    n_tail = (total - torch.arange(count, device=device)).to(logs.dtype)
    cut = (low + stride / n_tail).min() + _KS_MARGIN
    survivors = torch.nonzero(low <= cut).squeeze(1)
    exact = _ks_all(logs, u.index_select(0, survivors), None, None, rows=survivors)
    k = int(torch.argmin(exact))
    return int(survivors[k]), exact[k]


def _check_xlimit(value: Any, name: str, func: str) -> float:
    if _is_number(value) and math.isfinite(float(value)) and float(value) > 0:
        return float(value)
    raise InputError(
        f"The '{name}' parameter of {func} must be None or a float > 0"
        + (" or 'max'" if name == "xmax" else "")
        + f". Got {shown(value)} instead."
    )


def fit_power_law(
    eigvals,
    *,
    xmin: float | None = None,
    xmax: float | str | None = None,
    threshold: float = WW_EIGENVALUE_THRESHOLD,
    small_sample: str = "ww",
) -> PowerLawFit:
    r"""Fit a power law to the tail of an empirical spectral density (WeightWatcher's alpha).

    For each candidate :math:`x_{\min}`, the continuous maximum-likelihood exponent of the
    :math:`n` eigenvalues :math:`x_j \ge x_{\min}` is

    .. math::

        \hat\alpha = 1 + \frac{n}{\sum_{j} \log(x_j / x_{\min})},
        \qquad F(x) = 1 - (x / x_{\min})^{1 - \hat\alpha},

    and :math:`x_{\min}` is the candidate with the smallest Kolmogorov-Smirnov distance
    :math:`D = \max_{j=0}^{n-1} |F(x_{(j)}) - j/n|` (Clauset, Shalizi and Newman 2009). This
    is exactly the estimator of WeightWatcher 0.7.7 with its defaults (see the module
    docstring for what it does): same absolute ``threshold``, candidates (every sorted
    eigenvalue but the largest), KS distance, first-minimum tie-break, and the same
    small-sample rule below 20 eigenvalues. All candidates are handled at once: the
    log-sums come from suffix cumulative sums of :math:`(N - k - 1)(\log x_{k+1} - \log
    x_k) \ge 0` (exact zeros for tied tails, no cancellation), and the KS distances from
    blocks of the (candidates x tail) matrix of at most :math:`2^{17}` entries on the CPU
    (:math:`2^{22}` on a GPU), so memory stays bounded. The distances are first bounded
    from every 6th column of that matrix and computed in full only for the candidates
    whose bound does not rule them out (the result is the full scan's to the bit): about
    15 ms on one CPU core for 4,096 eigenvalues and 65 ms for 10,000, where scanning every
    candidate in full took 56 ms and 0.32 s.

    Parameters
    ----------
    eigvals : tensor or array_like, shape (p,)
        Eigenvalues (for a weight matrix: its squared singular values, unnormalised as
        in WeightWatcher), in any order. Values at most ``threshold`` are discarded.
    xmin : float > 0, optional
        Fixed start of the tail: no scan, :math:`\hat\alpha` from the eigenvalues
        :math:`\ge x_{\min}` by the formula above (or the truncated one).
    xmax : float > 0 or ``'max'``, optional
        Fit a power law truncated at ``xmax`` (``'max'``: the largest eigenvalue, as
        WeightWatcher's ``xmax='force'``): eigenvalues above it are discarded, the density
        is normalised on :math:`[x_{\min}, x_{\max}]`, :math:`\hat\alpha = 1 + v/t` with
        :math:`t = \log(x_{\max}/x_{\min})` solves :math:`1/v - 1/(e^v - 1) =
        \overline{\log(x/x_{\min})}/t` (bisection, any real :math:`\hat\alpha`), and
        :math:`F(x) = (1 - (x/x_{\min})^{1-\hat\alpha}) / (1 - (x_{\max}/x_{\min})^{1-\hat
        \alpha})`. ``None`` (default) fits the untruncated law, like WeightWatcher.
    threshold : float >= 0, default 1e-5
        Eigenvalues at or below it are treated as zeros (WeightWatcher's absolute
        ``EVALS_THRESH``; it assumes unnormalised weights).
    small_sample : {'ww', 'standard'}, default 'ww'
        With fewer than 20 eigenvalues and a scanned, untruncated fit, ``'ww'`` applies
        WeightWatcher's rule (bias-corrected :math:`\hat\alpha = 1 + (n-1)/\sum\log`,
        tails of at least 8, smallest :math:`D`; the whole spectrum below 8 eigenvalues);
        ``'standard'`` keeps the rule above at every size.

    Returns
    -------
    PowerLawFit
        ``(alpha, xmin, ks_distance, sigma, num_tail, xmax)``: 0-d float64 tensors on the
        input's device and an ``int``. ``sigma`` is :math:`(\hat\alpha - 1)/\sqrt n`
        untruncated; truncated, it is :math:`1/\sqrt{n I(\hat\alpha)}` from the Fisher
        information :math:`I = 1/u^2 - t^2 e^{ut}/(e^{ut} - 1)^2`, :math:`u = \hat\alpha -
        1` (which tends to the former as :math:`x_{\max} \to \infty`). Scale-equivariant:
        multiplying the eigenvalues (and ``threshold``, ``xmin``, ``xmax``) by
        :math:`c` multiplies ``xmin`` and ``xmax`` by :math:`c` and leaves the rest.

    Raises
    ------
    InputError
        If ``eigvals`` is not 1-D, non-finite or significantly negative; if fewer than 2
        eigenvalues exceed ``threshold`` (and lie at most ``xmax``) or they are all equal;
        if a given ``xmin`` leaves fewer than 2 distinct values in the tail; if the best
        tail is made of equal values (infinite exponent); or if an option is invalid.

    Notes
    -----
    Not differentiable (the choice of :math:`x_{\min}` is an argmin); the input is
    detached. 1-D only: spectra of different matrices keep different numbers of
    eigenvalues above the threshold, so fit them one by one.

    References
    ----------
    A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical
    data", SIAM Review 51(4), 2009.
    C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks",
    JMLR 22(165), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from infospec.measures.power_law import fit_power_law
    >>> x = 1.0 + np.random.default_rng(0).pareto(1.5, 5000)  # density ~ x^-2.5 on [1, inf)
    >>> fit = fit_power_law(x)
    >>> round(float(fit.alpha), 2), round(float(fit.sigma), 2)
    (2.47, 0.02)
    >>> fixed = fit_power_law(x, xmin=1.0)
    >>> bool(abs(fixed.alpha - (1 + 5000 / np.log(x).sum())) < 1e-9)
    True
    """
    func = "fit_power_law"
    t = as_float_tensor(eigvals, "eigvals", func)
    check_ndim(t, "eigvals", func, min_ndim=1, max_ndim=1, expected="exactly 1 dimension (p,)")
    t = check_eigenvalues(t, "eigvals", func).detach().to(torch.float64)
    threshold = check_positive(threshold, "threshold", func, allow_zero=True)
    check_choice(small_sample, "small_sample", func, ("ww", "standard"))
    xmin_ = None if xmin is None else _check_xlimit(xmin, "xmin", func)
    if xmax is None or (isinstance(xmax, str) and xmax == "max"):
        xmax_ = xmax
    else:
        xmax_ = _check_xlimit(xmax, "xmax", func)

    if xmin_ is not None and isinstance(xmax_, float) and xmin_ >= xmax_:
        raise InputError(
            f"The 'xmin' parameter of {func} must be below 'xmax'; got xmin={xmin_:.6g} "
            f"and xmax={xmax_:.6g}."
        )
    x = torch.sort(t[t > threshold]).values
    if xmax_ == "max" and x.numel():
        xmax_ = float(x[-1])
    if isinstance(xmax_, float):
        x = x[x <= xmax_]
    where = f"above threshold={threshold:g}" + (
        f" and at most xmax={xmax_:.6g}" if isinstance(xmax_, float) else ""
    )
    if x.numel() < 2:
        raise InputError(
            f"The 'eigvals' argument of {func} has {x.numel()} eigenvalue(s) {where} "
            f"(tensor with {describe(t)}); a power-law fit needs at least 2. Lower "
            f"'threshold' if the eigenvalues are normalised (small), or skip this matrix."
        )
    if bool(x[0] == x[-1]):
        raise InputError(
            f"The 'eigvals' argument of {func} has all {x.numel()} eigenvalues {where} "
            f"equal to {float(x[0]):.6g}: a flat spectrum has no power-law tail."
        )
    truncated = isinstance(xmax_, float)
    if xmin_ is not None:
        return _fit_fixed_xmin(x, xmin_, xmax_ if truncated else None, func)

    # Candidates i = 0..N-2, tail x[i:], of size n_i = N - i.
    size = x.numel()
    raw_logs = torch.log(x)
    logs = raw_logs - raw_logs.mean()  # centred: smaller rounding in the differences
    n_tail = (size - torch.arange(size - 1, device=x.device)).to(torch.float64)
    weights = (size - 1 - torch.arange(size - 1, device=x.device)).to(torch.float64) * (
        logs[1:] - logs[:-1]
    ).clamp_min(0)
    log_sums = torch.flip(torch.cumsum(torch.flip(weights, (0,)), 0), (0,))  # sum log(x/x_i)
    flat_tail = log_sums == 0  # the tail is x_i repeated: infinite exponent

    if truncated:
        span = math.log(xmax_) - raw_logs[:-1]
        feasible = (span > 0) & ~flat_tail
        safe_span = torch.where(feasible, span, torch.ones_like(span))
        ratio = torch.where(feasible, log_sums / n_tail / safe_span, torch.full_like(span, 0.5))
        v = _solve_truncated(ratio.clamp(1e-300, 1 - 1e-16))
        u = v / safe_span
        ks = _ks_all(logs, u, v, safe_span)
        ks = torch.where(flat_tail, (n_tail - 1) / n_tail, ks)
        ks = torch.where(span > 0, ks, torch.full_like(ks, math.inf))
        best = int(torch.argmin(ks))
        if bool(flat_tail[best]):
            _raise_flat_tail(x, best, func)
        alpha = 1 + u[best]
        sigma = 1 / (safe_span[best] * torch.sqrt(n_tail[best] * _truncated_fisher(v[best])))
        xmax_t = torch.tensor(xmax_, dtype=torch.float64, device=x.device)
        return PowerLawFit(alpha, x[best], ks[best], sigma, int(n_tail[best]), xmax_t)

    safe_sums = torch.where(flat_tail, torch.ones_like(log_sums), log_sums)
    inf = torch.full_like(n_tail, math.inf)
    if small_sample == "ww" and size < _WW_SMALL_N:
        # WeightWatcher's small-sample rule: bias-corrected exponent, tails of >= 8,
        # smallest D; the whole spectrum when no tail is long enough.
        alphas = torch.where(flat_tail, inf, 1 + (n_tail - 1) / safe_sums)
        usable = (n_tail >= _WW_SMALL_N_MIN_TAIL) & (log_sums > 1e-12)
        if bool(usable.any()):
            ks = _ks_all(
                logs, torch.where(usable, alphas - 1, torch.zeros_like(alphas)), None, None
            )
            best = int(torch.argmin(torch.where(usable, ks, inf)))
        else:
            best = 0
            if not bool(log_sums[0] > 1e-12):
                _raise_flat_tail(x, 0, func)
            ks = _ks_all(logs, alphas[:1] - 1, None, None)
        ks_best = ks[best]
    else:
        alphas = torch.where(flat_tail, inf, 1 + n_tail / safe_sums)
        best, ks_best = _ks_argmin(
            logs, torch.where(flat_tail, torch.zeros_like(alphas), alphas - 1)
        )
    if bool(flat_tail[best]):
        _raise_flat_tail(x, best, func)
    alpha = alphas[best]
    sigma = (alpha - 1) / torch.sqrt(n_tail[best])
    xmax_t = torch.tensor(math.inf, dtype=torch.float64, device=x.device)
    return PowerLawFit(alpha, x[best], ks_best, sigma, int(n_tail[best]), xmax_t)


def _raise_flat_tail(x: torch.Tensor, index: int, func: str) -> None:
    raise InputError(
        f"{func}: the best tail starts at xmin={float(x[index]):.6g} and holds "
        f"{x.numel() - index} equal eigenvalues, so its exponent is infinite. The spectrum "
        f"has repeated top values; fit it with a given 'xmin' below them."
    )


def _fit_fixed_xmin(x: torch.Tensor, xmin: float, xmax: float | None, func: str) -> PowerLawFit:
    """Maximum-likelihood fit with a given xmin (and optional truncation at xmax)."""
    tail = x[x >= xmin]
    n = tail.numel()
    log_ratio = torch.log(tail / xmin)
    total = log_ratio.sum()
    if n < 2 or not bool(total > 0):
        raise InputError(
            f"The 'xmin' parameter of {func} leaves {n} eigenvalue(s) at or above "
            f"xmin={xmin:.6g}"
            + ("" if n < 2 else ", all equal to it")
            + "; a power-law fit needs at least 2 distinct values in the tail. Lower 'xmin'."
        )
    device = x.device
    n_t = torch.tensor(float(n), dtype=torch.float64, device=device)
    steps = torch.arange(n, dtype=torch.float64, device=device) / n
    if xmax is None:
        u = n_t / total
        model = _tail_cdf(log_ratio, u, None, None)
        sigma = u / torch.sqrt(n_t)
        xmax_t = torch.tensor(math.inf, dtype=torch.float64, device=device)
    else:
        span = torch.tensor(math.log(xmax / xmin), dtype=torch.float64, device=device)
        ratio = (total / n_t / span).clamp(1e-300, 1 - 1e-16)
        v = _solve_truncated(ratio.reshape(1))[0]
        u = v / span
        model = _tail_cdf(log_ratio, u, v, span)
        sigma = 1 / (span * torch.sqrt(n_t * _truncated_fisher(v)))
        xmax_t = torch.tensor(xmax, dtype=torch.float64, device=device)
    ks = (model - steps).abs().amax()
    xmin_t = torch.tensor(xmin, dtype=torch.float64, device=device)
    return PowerLawFit(1 + u, xmin_t, ks, sigma, n, xmax_t)
