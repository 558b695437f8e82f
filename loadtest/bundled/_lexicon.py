"""The synthetic vocabulary: common words with Zipf frequencies, rare multi-piece words, names, numbers.

Common words are whole-word entries of the bert-base-uncased WordPiece vocabulary (``words.txt``), which
is roughly frequency-ordered, so rank r is drawn with weight 1 / (r + q) (Zipf-Mandelbrot, exponent 1;
a smaller offset q favours the short top words: q = 1 for chat, reviews and news, 3 for encyclopaedic text).
Real English also has words that a WordPiece tokenizer splits (rare words, names, numbers); without
them the text would tokenize at ~1.1 tokens per word instead of the ~1.25 measured on real news and
Wikipedia prose. The pools of such words are built once from a fixed seed, independent of any user seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from ._random import Stream

N_RARE, N_NAMES = 3000, 2000
_POOL_SEED = 20231116  # fixed: the pools are part of the vocabulary, not of a user's draw
_ZIPF_SCALE = 10**12


def _read(name: str) -> list[str]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@dataclass(frozen=True)
class Lexicon:
    """Strings by id: ``[0, n_common)`` common words, then rare words, names, numbers (each a block)."""

    words: np.ndarray  # object array of str, lowercase except names
    capital: np.ndarray  # the same strings with the first letter upper-cased
    lower: np.ndarray  # the same strings lower-cased (for uncased corpora)
    n_common: int
    rare: tuple[int, int]  # [start, stop) of each block
    names: tuple[int, int]
    numbers: tuple[int, int]

    def block(self, stream: Stream, n: int, span: tuple[int, int]) -> np.ndarray:
        return span[0] + stream.below(n, span[1] - span[0])

    def name_ids(self, stream: Stream, n: int) -> np.ndarray:
        return self.block(stream, n, self.names)


def _glue(stems: list[str], pieces: list[str], stream: Stream, n: int, known: set[str]) -> list[str]:
    """Join a stem and one or two continuation pieces into words the vocabulary does not hold whole."""
    out: list[str] = []
    seen = set(known)
    while len(out) < n:
        s, p1, p2, two = stream.below(4, len(stems) * len(pieces))
        word = stems[s % len(stems)] + pieces[p1 % len(pieces)]
        if two % 3 == 0:
            word += pieces[p2 % len(pieces)]
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _numbers() -> list[str]:
    """Years, counts and decimals in forms a punctuation-splitting tokenizer keeps whole."""
    years = [str(y) for y in range(1900, 2024)]
    counts = [str(k) for k in range(2, 100)] + [f"{k},{m:03d}" for k in (1, 2, 5, 12, 40) for m in (0, 200, 500)]
    decimals = [f"{a}.{b}" for a in range(0, 10) for b in (1, 5, 8)]
    return years + counts + decimals


@cache
def lexicon() -> Lexicon:
    common = _read("words.txt")
    pieces = _read("pieces.txt")
    stream = Stream(_POOL_SEED)
    stems = [w for w in common[200:6000] if 3 <= len(w) <= 7]
    rare = _glue(stems, pieces, stream, N_RARE, set(common))
    heads = [w[:4] for w in common[300:6000] if len(w) >= 4]
    names = [w.capitalize() for w in _glue(heads, pieces, stream, N_NAMES, set(common) | set(rare))]
    numbers = _numbers()
    words = common + rare + names + numbers
    starts = np.cumsum([0, len(common), len(rare), len(names), len(numbers)])
    return Lexicon(
        words=np.array(words, dtype=object),
        capital=np.array([w[:1].upper() + w[1:] for w in words], dtype=object),
        lower=np.array([w.lower() for w in words], dtype=object),
        n_common=len(common),
        rare=(int(starts[1]), int(starts[2])),
        names=(int(starts[2]), int(starts[3])),
        numbers=(int(starts[3]), int(starts[4])),
    )


@cache
def zipf_cdf(offset: int) -> np.ndarray:
    """Cumulative integer weights ``10**12 // (rank + offset)`` over the common words (exact, no floats)."""
    return np.cumsum(_ZIPF_SCALE // (np.arange(lexicon().n_common, dtype=np.int64) + offset))
