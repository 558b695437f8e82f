"""Deterministic random streams and length distributions for the bundled sets.

Only PCG64's raw 64-bit output is taken from numpy: its stream (and SeedSequence's seeding) is fixed,
whereas numpy's ``Generator`` methods carry no cross-version guarantee. Every conversion after that
(uniform doubles, bounded integers, quantiles) is written here, so ``load(name, n, seed)`` gives the
same rows on every machine and numpy version.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_TWO_POW_53 = float(2**53)
_LEVELS = 4096
# Weyl-sequence steps: fractional parts of square roots of primes (irrational, so every prefix of
# i * step mod 1 is spread evenly over [0, 1) and two fields' sequences do not line up).
_STEPS = tuple(math.sqrt(p) % 1.0 for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37))


def name_key(name: str) -> int:
    """A stable 32-bit key for a dataset name (CRC-32, unlike ``hash`` not salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def unit_doubles(raw: np.ndarray) -> np.ndarray:
    """Raw 64-bit draws as doubles in [0, 1): the top 53 bits of each."""
    return (raw >> np.uint64(11)).astype(np.float64) / _TWO_POW_53


class Stream:
    """Uniform numbers from PCG64 seeded by a SeedSequence over ``entropy`` (non-negative ints)."""

    __slots__ = ("_bits",)

    def __init__(self, *entropy: int) -> None:
        self._bits = np.random.PCG64(np.random.SeedSequence(list(entropy)))

    def raw(self, n: int) -> np.ndarray:
        return self._bits.random_raw(n)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` doubles in [0, 1) (see ``unit_doubles``)."""
        return unit_doubles(self.raw(n))

    def below(self, n: int, k: int) -> np.ndarray:
        """``n`` integers in [0, k) (modulo bias below k / 2**64, irrelevant for k < 2**40)."""
        return (self.raw(n) % np.uint64(k)).astype(np.int64)

    def one(self) -> float:
        return float(self.uniform(1)[0])

    def pick(self, k: int) -> int:
        return int(self.below(1, k)[0])


def weyl(offset: float, field: int, i: int) -> float:
    """Row ``i``'s quantile for length field ``field``: an evenly spread sequence that does not depend on n.

    Lengths drawn at these quantiles match the fitted distribution's mean within about 1 % from a few
    hundred rows on, where independent draws of a heavy-tailed length wander by several percent.
    """
    u = (offset + i * _STEPS[field % len(_STEPS)]) % 1.0
    return min(max(u, 1e-6), 1.0 - 1e-6)


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def norm_ppf(u: float) -> float:
    """Standard normal quantile of ``u`` in (0, 1)."""
    if u < 0.02425:
        q = math.sqrt(-2.0 * math.log(u))
        return (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0)
    if u > 1.0 - 0.02425:
        return -norm_ppf(1.0 - u)
    q = u - 0.5
    r = q * q
    return (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q / (
        ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0)


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(frozen=True)
class LogNormal:
    """A length distribution: log-normal with the given mean and log-sd, clipped to [lo, hi], rounded.

    ``mu`` is solved so that the mean *after* clipping is ``mean``; quantiles map to integer lengths.
    """

    mean: float
    sigma: float
    lo: int
    hi: int

    @classmethod
    def from_median(cls, mean: float, median: float, lo: int, hi: int) -> LogNormal:
        """Fit to a published mean and median: sigma = sqrt(2 ln(mean / median))."""
        return cls(mean, math.sqrt(2.0 * math.log(mean / median)), lo, hi)

    def _clipped_mean(self, mu: float) -> float:
        s = self.sigma
        a, b = (math.log(self.lo) - mu) / s, (math.log(self.hi) - mu) / s
        body = math.exp(mu + s * s / 2.0) * (_norm_cdf(b - s) - _norm_cdf(a - s))
        return self.lo * _norm_cdf(a) + body + self.hi * (1.0 - _norm_cdf(b))

    @cached_property
    def mu(self) -> float:
        lo, hi = math.log(self.lo) - 10.0, math.log(self.hi) + 10.0
        for _ in range(200):  # bisection: the clipped mean rises monotonically with mu
            mid = (lo + hi) / 2.0
            lo, hi = (mid, hi) if self._clipped_mean(mid) < self.mean else (lo, mid)
        return (lo + hi) / 2.0

    @property
    def median(self) -> float:
        return min(max(math.exp(self.mu), self.lo), self.hi)

    def length(self, u: float) -> int:
        x = math.exp(self.mu + self.sigma * norm_ppf(u))
        return int(min(max(round(x), self.lo), self.hi))

    @cached_property
    def _table(self) -> np.ndarray:
        return np.array([self.length((j + 0.5) / _LEVELS) for j in range(_LEVELS)], dtype=np.int64)

    def lengths(self, us: np.ndarray) -> np.ndarray:
        """``length`` over an array, quantised to 4,096 quantile levels (the many sentence lengths of a text)."""
        return self._table[(us * _LEVELS).astype(np.int64)]

    def describe(self) -> dict:
        return {"family": "log-normal, clipped and rounded", "mean": self.mean, "sigma_log": round(self.sigma, 4),
                "median": round(self.median, 2), "clip": [self.lo, self.hi]}
