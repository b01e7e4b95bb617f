"""ROAD's noisy linear imputation for a whole chunk: batched CG on an accelerator, a lean direct solve on the CPU.

pytorch-grad-cam's ``NoisyLinearImputer`` fills each removed pixel with the weighted mean of its 8 neighbours
(1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones; at the image border the weights of the missing
neighbours are dropped, not renormalised away) with the kept pixels fixed, by building one sparse system per
image and percentile and solving it directly on the host (SuperLU) — 8 solves per map and scene, the cost that
dominated ``attnviz eval``. Two solvers of the same system:

* ``cg`` (on CUDA / MPS): matrix-free — the neighbour sum is a fixed 3 x 3 stencil, so ``A x = S x - N(x)`` on
  the removed pixels (``S`` the border-aware weight sum). ``A`` is symmetric and, as long as any pixel is kept,
  positive definite (irreducibly diagonally dominant), so conjugate gradients preconditioned by one multigrid
  V-cycle solve every image x channel x percentile of a batch together, in float64 (the preconditioner in
  float32), until the largest residual of every system is below :data:`RESIDUAL_TOL`: within 1e-6 of the direct
  solve on the images eval uses (tests/metrics/test_imputation.py checks 1e-4 against the library).
* ``direct`` (on the CPU, where the many small tensor operations of CG cost more than they save): the exact
  sparse solve, no tolerance (float64 rounding only: ~1e-12 from the library's SuperLU on eval's images). All
  systems of a call are assembled together in vectorised numpy (the library fills a ``lil_matrix`` element by
  element, about half its time), each symmetric positive definite system is factorised once as ``L D L^T`` by
  qdldl (AMD order, no pivoting: 2x faster than SuperLU's LU here, and it releases the GIL, so the masks of a call
  factorise on ``torch.get_num_threads()`` cores at once), imputations with the same mask share that
  factorisation, and the 3 channels are 3 triangular solves with it. The factorisation is ~90 % of the time
  left (BENCHMARKS.md, issue 27).

An image with every pixel removed has no solution (the library's solve is singular and returns NaN); it gets
zeros plus the noise here.

The noise follows the library's rule and draw order: after the solve, ``noise * randn`` is added to the removed
pixels, drawn from torch's global CPU generator as the (channels, removed) standard normal the library draws,
one draw per imputation in the order the caller lists them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

NOISE = 0.01            # the library's default noise magnitude (absolute, in the model's input units)
RESIDUAL_TOL = 1e-9     # stop when every system's largest |residual| is below this (float64)
MAX_ITERATIONS = 2000   # a bound only: 128 px map-shaped masks converge in a few hundred
CHECK_EVERY = 2         # convergence is read on the host every few iterations (a device sync each time)
COARSEST = 8            # the coarse-grid cascade stops above this size
SMOOTHING_SWEEPS = 2     # weighted-Jacobi sweeps before and after each coarse correction
COARSEST_SWEEPS = 20     # sweeps on the coarsest grid (a fixed count keeps the cycle one linear operator)
JACOBI_WEIGHT = 0.8
SHARE_MASKS = 4         # masks a CPU worker thread assembles and factorises per task (direct solver)
SOLVE_BATCH = 64        # imputations solved together: 64 x 3 x 128 x 128 float64 vectors are 25 MB each

def removal_masks(cam: np.ndarray, percentiles: Sequence[int]) -> torch.Tensor:
    """The pixels ROADCombined removes for one (H, W) map in [0, 1]: (2P, H, W) bool, True = removed.

    The order is ROADCombined's: least relevant first at every percentile, then most relevant first. A pixel is
    kept where its relevance (``1 - cam`` for LeRF, ``cam`` for MoRF) is below that relevance's percentile, the
    library's threshold rule with its float32 arithmetic.
    """
    cam_t = torch.as_tensor(np.ascontiguousarray(cam, dtype=np.float32))
    masks = []
    for relevance in (1 - cam_t, cam_t):
        values = relevance.numpy()
        for p in percentiles:
            masks.append(~(relevance < np.percentile(values, p)))
    return torch.stack(masks)


def imputation_noise(removed: torch.Tensor, channels: int, scale: float = NOISE) -> torch.Tensor:
    """The library's noise for each imputation of ``removed`` (Q, H, W), drawn in order: (Q, C, H, W) float32.

    Each draw is a contiguous (C, n) standard normal (n = removed pixels), which is what the library's
    ``randn_like`` of its solution gets, so the same generator state gives the same numbers (checked in
    tests/metrics/test_imputation.py; a strided draw of the same shape gives other numbers).
    """
    q, h, w = removed.shape
    out = torch.zeros(q, channels, h * w)
    for k in range(q):
        where = torch.nonzero(removed[k].reshape(-1)).squeeze(1)
        draw = torch.randn(channels, where.numel())
        out[k][:, where] = scale * draw
    return out.view(q, channels, h, w)


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """The weighted sum of each pixel's 8 neighbours (zero outside the image), per (N, 1, H, W) system: the
    library's weights as eight shifted adds, which ran 2-4x faster than ``conv2d`` with one channel here."""
    p = F.pad(x, (1, 1, 1, 1))
    edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return edges / 6 + corners / 12


def _per_system(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1).view(-1, 1, 1, 1)


class _Multigrid:
    """A symmetric V-cycle for the neighbour-mean system, used as the preconditioner of conjugate gradients.

    Plain CG needs about as many iterations as the largest removed region is wide (400+ at 128 px, where ROAD
    removes up to 80 % of the image); one V-cycle per iteration removes the smooth error on coarser grids, so
    the iteration count stops growing with the region's size. Coarse grids halve the size while it stays
    even and above :data:`COARSEST`; a coarse cell is solved for when all four of its pixels are (thin removed
    strips are left to the smoother); restriction sums the 4 children (the transpose of the piecewise-constant
    prolongation), the coarse operator is the same stencil scaled by 2 (what that prolongation's Galerkin
    product gives for this stencil on open regions). Weighted Jacobi smooths, the same sweeps before and after,
    and the coarsest grid gets a fixed number of sweeps, so the cycle is one fixed symmetric positive definite
    operator, as CG requires.
    """

    def __init__(self, unknown: torch.Tensor) -> None:
        self.levels = []
        scale = 1.0
        while True:
            weight_sum = _neighbour_sum(torch.ones_like(unknown[:1])) * scale
            self.levels.append((unknown, weight_sum, scale))
            h, w = unknown.shape[-2:]
            if min(h, w) < 2 * COARSEST or h % 2 or w % 2:
                break
            unknown = -F.max_pool2d(-unknown, 2)
            scale *= 2.0

    @staticmethod
    def _apply(level: tuple, x: torch.Tensor) -> torch.Tensor:
        unknown, weight_sum, scale = level
        return unknown * (weight_sum * x - scale * _neighbour_sum(x))

    def __call__(self, residual: torch.Tensor, depth: int = 0) -> torch.Tensor:
        level = self.levels[depth]
        unknown, weight_sum, _ = level
        diagonal = torch.where(unknown > 0, weight_sum, torch.ones_like(weight_sum))
        sweeps = COARSEST_SWEEPS if depth == len(self.levels) - 1 else SMOOTHING_SWEEPS
        x = JACOBI_WEIGHT * residual / diagonal
        for _ in range(sweeps - 1):
            x = x + JACOBI_WEIGHT * (residual - self._apply(level, x)) / diagonal
        if depth == len(self.levels) - 1:
            return x
        coarse_unknown = self.levels[depth + 1][0]
        coarse = self(coarse_unknown * 4 * F.avg_pool2d(residual - self._apply(level, x), 2), depth + 1)
        x = x + unknown * F.interpolate(coarse_unknown * coarse, scale_factor=2, mode="nearest")
        for _ in range(sweeps):
            x = x + JACOBI_WEIGHT * (residual - self._apply(level, x)) / diagonal
        return x


def linear_solve(values: torch.Tensor, unknown: torch.Tensor, tol: float = RESIDUAL_TOL,
                 max_iterations: int = MAX_ITERATIONS) -> torch.Tensor:
    """The noise-free imputation of (N, 1, H, W) float64 systems: kept pixels as given, removed ones solved by
    multigrid-preconditioned conjugate gradients (each system its own step sizes), until every system's largest
    |residual| is below ``tol``."""
    weight_sum = _neighbour_sum(torch.ones_like(values[:1]))

    def operator(x: torch.Tensor) -> torch.Tensor:
        return unknown * (weight_sum * x - _neighbour_sum(x))

    precondition = _Multigrid(unknown.float())
    solution = torch.zeros_like(values)
    residual = unknown * _neighbour_sum(values * (1 - unknown))
    z = precondition(residual.float()).double()
    direction = z.clone()
    rz = _per_system(residual * z)
    for step in range(max_iterations):
        if step % CHECK_EVERY == 0 and float(residual.abs().max()) < tol:
            break
        a_dir = operator(direction)
        curvature = _per_system(direction * a_dir)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(1e-300), torch.zeros_like(rz))
        solution += alpha * direction
        residual -= alpha * a_dir
        z = precondition(residual.float()).double()
        rz_next = _per_system(residual * z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(1e-300), torch.zeros_like(rz))
        direction = z + beta * direction
        rz = rz_next
    return values * (1 - unknown) + solution * unknown


# the weights of the neighbours that come before a pixel in row-major order, in increasing unknown number:
# (-1, -1), (-1, 0), (-1, +1), (0, -1) — the rows of a column's upper triangle
_EARLIER_WEIGHTS = (1 / 12, 1 / 6, 1 / 12, 1 / 6)


def _kept_neighbour_sum(images: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The right-hand sides of every imputation at once: the weighted sum of each pixel's kept neighbours,
    (Q, C, H, W) float64 from (Q, C, H, W) images and (Q, H, W) removed (eight shifted adds in numpy, whose
    per-operation cost on the CPU is a fraction of torch's at this size)."""
    p = np.pad(images * ~removed[:, None], ((0, 0), (0, 0), (1, 1), (1, 1)))
    edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return edges / 6 + corners / 12


def _weight_sum(h: int, w: int) -> np.ndarray:
    """Each pixel's in-bounds neighbour weight sum (the diagonal; the library drops the border's weights)."""
    return _kept_neighbour_sum(np.ones((1, 1, h, w)), np.zeros((1, h, w), bool))[0, 0]


def _upper_systems(removed: np.ndarray) -> list:
    """The upper triangles of ``D - W`` for (Q, H, W) removed masks, as CSC matrices, all assembled at once.

    Unknowns are numbered in row-major order, so column j's rows are its removed earlier neighbours, already in
    increasing order, then j itself: shifted slices of one numbering array give every column of every system,
    with no sort, no COO conversion and no per-system Python work but the final split.
    """
    from scipy.sparse import csc_matrix

    q, h, w = removed.shape
    flat = removed.reshape(q, -1)
    number = np.full((q, h + 1, w + 2), -1, np.int32)     # one padding row above, one column each side
    number[:, 1:, 1:-1] = np.where(removed, (np.cumsum(flat, 1, dtype=np.int32) - 1).reshape(q, h, w), -1)
    rows = np.stack([number[:, :-1, :-2], number[:, :-1, 1:-1], number[:, :-1, 2:], number[:, 1:, :-2],
                     number[:, 1:, 1:-1]], -1)
    values = np.empty((h, w, 5))
    values[..., :4] = np.negative(_EARLIER_WEIGHTS)
    values[..., 4] = _weight_sum(h, w)
    present = (rows >= 0) & removed[..., None]
    column_sizes = present.sum(-1)
    indices, data = rows[present], np.broadcast_to(values, rows.shape)[present]
    out, at = [], 0
    for k in range(q):
        sizes = column_sizes[k][removed[k]]
        indptr = np.zeros(sizes.size + 1, np.int64)
        np.cumsum(sizes, out=indptr[1:])
        n_entries = int(indptr[-1])
        out.append(csc_matrix((data[at:at + n_entries], indices[at:at + n_entries], indptr),
                              shape=(sizes.size, sizes.size)))
        at += n_entries
    return out


def _solve_share(images: np.ndarray, removed: np.ndarray, out: np.ndarray, groups: list[list[int]]) -> None:
    """One worker's share of :func:`direct_impute`: its masks' systems assembled together, each factorised once,
    every imputation with that mask solved with it (3 channels, 3 triangular solves), written into ``out``."""
    import qdldl

    members = [k for group in groups for k in group]
    rhs = dict(zip(members, _kept_neighbour_sum(images[members], removed[members])))
    for group, system in zip(groups, _upper_systems(removed[[group[0] for group in groups]])):
        factor, where = qdldl.Solver(system, upper=True), removed[group[0]]
        for k in group:
            out[k][:, where] = np.stack([factor.solve(np.ascontiguousarray(channel[where])) for channel in rhs[k]])


def direct_impute(images: np.ndarray, removed: np.ndarray, workers: int = 1) -> np.ndarray:
    """The noise-free imputation of (Q, C, H, W) float64 ``images`` where ``removed`` (Q, H, W) is True, by the
    exact sparse solve on the host.

    ``D - W`` is symmetric positive definite (module docstring), so an LDL^T factorisation without pivoting
    (qdldl, with its AMD fill-reducing order) is exact up to float64 rounding: no tolerance, it agrees with the
    library's SuperLU solve to ~1e-12 on eval's images. Imputations with the same mask (ties in a map make
    several percentiles remove the same pixels) share one factorisation. qdldl and most of numpy release the
    GIL, so ``workers`` threads take shares of a few masks each (largest first, for balance). An image with
    nothing kept gets zeros (its system is singular; the library's solve returns NaN).
    """
    from concurrent.futures import ThreadPoolExecutor

    q, c, h, w = images.shape
    out = images.copy()
    counts = removed.reshape(q, -1).sum(1)
    out[counts == h * w] = 0.0
    groups: dict[bytes, list[int]] = {}
    for k in np.flatnonzero((counts > 0) & (counts < h * w)):
        groups.setdefault(removed[k].tobytes(), []).append(int(k))
    ordered = sorted(groups.values(), key=lambda group: -counts[group[0]])
    n_shares = min(len(ordered), max(workers, -(-len(ordered) // SHARE_MASKS)))
    shares = [ordered[i::n_shares] for i in range(n_shares)]
    with ThreadPoolExecutor(max(1, min(workers, n_shares))) as pool:
        list(pool.map(lambda share: _solve_share(images, removed, out, share), shares))
    return out


def linear_impute(images: torch.Tensor, removed: torch.Tensor, tol: float = RESIDUAL_TOL,
                  max_iterations: int = MAX_ITERATIONS, solver: str = "auto") -> torch.Tensor:
    """The noise-free imputation of ``images`` (Q, C, H, W) where ``removed`` (Q, H, W) is True.

    Returns float32 images equal to the input on kept pixels and the solution of the neighbour-mean system on
    removed ones. ``solver``: ``"cg"`` — multigrid-preconditioned CG on the images' device, every image and
    channel its own system, all solved together until the largest residual is below ``tol``; ``"direct"`` —
    the exact sparse solve on the host (:func:`direct_impute`, no tolerance); ``"auto"`` (default) — CG on an
    accelerator, direct for CPU tensors (on 2 CPU cores the direct solve measured 10x+ faster than CG,
    BENCHMARKS.md).
    """
    q, c, h, w = images.shape
    if solver == "auto":
        solver = "direct" if images.device.type == "cpu" else "cg"
    if solver == "direct":
        host = images.detach().cpu().to(torch.float64).numpy()
        out = direct_impute(host, removed.cpu().numpy().astype(bool), torch.get_num_threads())
        return torch.from_numpy(out).to(device=images.device, dtype=torch.float32)
    if solver != "cg":
        raise ValueError(f"solver must be 'auto', 'cg' or 'direct', not {solver!r}")
    values = images.detach().to(torch.float64).reshape(q * c, 1, h, w)
    unknown = removed.to(device=images.device, dtype=torch.float64).repeat_interleave(c, 0).view(q * c, 1, h, w)
    return linear_solve(values, unknown, tol, max_iterations).view(q, c, h, w).to(torch.float32)


def noisy_linear_impute(images: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor | None = None,
                        batch: int = SOLVE_BATCH, solver: str = "auto") -> torch.Tensor:
    """:func:`linear_impute` in solve batches of ``batch``, plus ``noise`` (Q, C, H, W, from
    :func:`imputation_noise`) on the removed pixels: what ``NoisyLinearImputer`` gives for each imputation."""
    parts = []
    for start in range(0, images.shape[0], batch):
        part = linear_impute(images[start:start + batch], removed[start:start + batch], solver=solver)
        if noise is not None:
            part = part + noise[start:start + batch].to(part.device)
        parts.append(part)
    return torch.cat(parts) if parts else images.float()
