"""Synthetic prose: words from the lexicon laid out in sentences and paragraphs with punctuation.

A text's length is set exactly, in one of two units:

* ``"tokens"``: words plus punctuation marks, as a punctuation-splitting (Penn Treebank-like) tokenizer
  counts them; the unit of the CNN/DailyMail and XSum papers and of pre-tokenized corpora;
* ``"words"``: whitespace-separated words, ``len(text.split())``.

Everything is vectorised over a text's words: a 1,000-row set of 800-word articles takes ~0.1 s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from ._lexicon import lexicon, zipf_cdf
from ._random import LogNormal, Stream, unit_doubles

# A sentence model longer than any text: the whole text is one sentence (or its ends are set elsewhere).
ONE_SENTENCE = LogNormal(float(10**6), 0.01, 10**6 - 1, 10**6 + 1)

_MARK = "\x1e"  # marks a paragraph break inside the joined text, then removed (NUL would not do: numpy strips it)


@dataclass(frozen=True, eq=False)  # identity hash: styles are cache keys on every call, field hashing is slow
class Style:
    """How one corpus writes: casing, punctuation, sentence and paragraph shape, word mix.

    Define styles once at module level: derived tables are cached per Style object.
    """

    cased: bool = True
    spaced: bool = False  # punctuation as separate whitespace tokens ("it 's good ."), as in SST or WikiText
    sentence: LogNormal = LogNormal(18.0, 0.45, 2, 90)  # content words per sentence
    comma_rate: float = 0.055  # commas per content word
    marks: tuple[tuple[str, float], ...] = ((".", 0.95), ("?", 0.03), ("!", 0.02))
    p_rare: float = 0.045  # rare words that WordPiece splits
    p_name: float = 0.035  # capitalised names (also split)
    p_number: float = 0.015
    para_sep: str | None = None  # paragraph separator; None: one paragraph
    para_sentences: float = 4.0  # mean sentences per paragraph
    zipf_offset: int = 1  # common word of rank r has weight 1 / (r + zipf_offset)

    def but(self, **changes) -> Style:
        return replace(self, **changes)


@dataclass(frozen=True)
class Text:
    """A rendered text and where its words are: ``offsets[j]`` is word j's first character."""

    text: str
    words: list[str]  # word j as written, trailing punctuation included
    offsets: np.ndarray  # empty unless compose(..., offsets=True)
    ids: np.ndarray  # lexicon id of word j


class _Draws:
    """The raw draws of one text, in lanes (fewer, larger numpy calls per text).

    ``mix`` (n): commas from the low 32 bits, word category from the high 32 (both compared as
    integers); ``zipf`` (n): a common word's rank, or the pick inside a special block (a word is one or
    the other); ``sentence``, ``mark``, ``para`` (one per expected sentence, more drawn if a text needs them).
    """

    def __init__(self, stream: Stream, n: int, sentences: int) -> None:
        self.stream, self.n, self.k = stream, n, sentences
        raw = stream.raw(2 * n + 3 * sentences)
        self.mix, self.zipf = raw[:n], raw[n:2 * n]
        self._u = unit_doubles(raw[2 * n:])

    def lane(self, index: int, k: int) -> np.ndarray:
        """k uniforms of lane ``index`` (0: sentence, 1: mark, 2: para), drawn afresh beyond the lane."""
        own = self._u[index * self.k:(index + 1) * self.k]
        return own[:k] if k <= self.k else np.concatenate((own, self.stream.uniform(k - self.k)))


def _sentence_ends(d: _Draws, m: int, style: Style) -> np.ndarray:
    """Boolean mask over m content words: True where a sentence ends."""
    stops = np.cumsum(style.sentence.lengths(d.lane(0, d.k))) - 1
    if stops[-1] < m - 1:  # rare: more sentences than expected
        more = style.sentence.lengths(d.stream.uniform(m))
        stops = np.concatenate((stops, stops[-1] + np.cumsum(more)))
    ends = np.zeros(m, dtype=bool)
    ends[stops[stops < m]] = True
    ends[-1] = True
    return ends


@cache
def _blocks(style: Style) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.uint64]:
    """Thresholds on a draw's high 32 bits for the rare, name and number blocks (beyond: common words),
    each block's start and size, and the comma threshold on the low 32 bits."""
    lex = lexicon()
    spans = (lex.rare, lex.names, lex.numbers)
    edges = np.cumsum([style.p_rare, style.p_name, style.p_number])
    thresholds = np.array([int(e * 2**32) << 32 for e in edges], dtype=np.uint64)
    return (thresholds, np.array([a for a, _ in spans], np.int64), np.array([b - a for a, b in spans], np.uint64),
            np.uint64(int(style.comma_rate * 2**32)))


def _word_ids(d: _Draws, m: int, style: Style) -> np.ndarray:
    cdf = zipf_cdf(style.zipf_offset)
    raw = d.zipf[:m]
    ids = np.searchsorted(cdf, (raw % np.uint64(int(cdf[-1]))).astype(np.int64), side="right")
    thresholds, starts, sizes, _ = _blocks(style)
    category = np.searchsorted(thresholds, d.mix[:m], side="right")
    special = np.flatnonzero(category < 3)
    if len(special):
        cat = category[special]
        ids[special] = starts[cat] + (raw[special] % sizes[cat]).astype(np.int64)
    return ids


def _content_count(d: _Draws, n: int, unit: str, style: Style, comma: np.uint64,
                   sentences: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
    """How many content words give n units; their sentence-end and comma masks."""
    if sentences is None:
        ends = _sentence_ends(d, n, style)
    else:
        ends = np.zeros(n, dtype=bool)
        ends[np.cumsum(sentences) - 1] = True
    commas = ((d.mix & np.uint64(0xFFFF_FFFF)) < comma) & ~ends
    if unit == "words" and not style.spaced:
        return n, ends, commas
    mark = _marks_count(style.marks)
    units = np.cumsum(1 + ends * mark + commas)  # units through word j
    m = max(1, int(np.searchsorted(units, n, side="right")))
    if m > 1 and not ends[m - 1] and units[m - 1] - commas[m - 1] + mark > n:
        m -= 1  # the closing mark would overshoot: end one word earlier
    ends, commas = ends[:m].copy(), commas[:m].copy()
    ends[-1], commas[-1] = True, False
    return m, ends, commas


@cache
def _marks_count(marks: tuple[tuple[str, float], ...]) -> int:
    """Whether a sentence's closing mark is a token (not when every mark is empty)."""
    return int(any(mark for mark, _ in marks))


@cache
def _mark_table(marks: tuple[tuple[str, float], ...], gap: str) -> tuple[np.ndarray, np.ndarray]:
    cdf = np.cumsum([p for _, p in marks])
    return cdf / cdf[-1], np.array([gap + s if s else "" for s, _ in marks], dtype=object)


def _choose(u: np.ndarray, marks: tuple[tuple[str, float], ...], gap: str) -> np.ndarray:
    cdf, strings = _mark_table(marks, gap)
    return strings[np.minimum(np.searchsorted(cdf, u, side="right"), len(strings) - 1)]


def compose(stream: Stream, n: int, style: Style, unit: str = "tokens", first: int | None = None,
            offsets: bool = False, sentences: np.ndarray | None = None) -> Text:
    """A text of exactly ``n`` units (``n`` + 1 tokens at most when the last sentence needs its mark).

    ``sentences`` (unit ``"words"`` only): explicit sentence lengths in words, summing to n (chat turns).

    ``offsets=True`` also returns where each word starts (for answer spans and entity positions).
    """
    lex, n = lexicon(), max(1, n)
    d = _Draws(stream, n, min(n, int(1.3 * n / style.sentence.mean) + 2))
    comma = _blocks(style)[3]
    m, ends, commas = _content_count(d, n, unit, style, comma, sentences)
    ids = _word_ids(d, m, style)
    if first is not None:
        ids[0] = first
    if style.cased:
        starts = np.concatenate(([True], ends[:-1]))
        words = np.where(starts, lex.capital[ids], lex.words[ids])
    else:
        words = lex.lower[ids]
    gap = " " if style.spaced else ""
    commas_at = np.flatnonzero(commas)
    words[commas_at] = words[commas_at] + (gap + ",")
    ends_at = np.flatnonzero(ends)
    words[ends_at] = words[ends_at] + _choose(d.lane(1, len(ends_at)), style.marks, gap)
    plain = words.tolist()
    gaps = np.ones(m, dtype=np.int64)  # characters after each word
    if style.para_sep is None:
        text = " ".join(plain)
    else:
        breaks = ends_at[:-1][d.lane(2, len(ends_at) - 1) < 1.0 / style.para_sentences]
        words[breaks] = words[breaks] + (style.para_sep + _MARK)
        text = " ".join(words.tolist()).replace(style.para_sep + _MARK + " ", style.para_sep)
        gaps[breaks] = len(style.para_sep)
    where = np.zeros(0, dtype=np.int64)
    if offsets:
        lengths = np.fromiter(map(len, plain), dtype=np.int64, count=m) + gaps
        where = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return Text(text, plain, where, ids)


def prose(stream: Stream, n: int, style: Style, unit: str = "tokens") -> str:
    return compose(stream, n, style, unit).text


def sentence(stream: Stream, n: int, style: Style, unit: str = "tokens", mark: str | None = ".",
             first: int | None = None, offsets: bool = False) -> Text:
    """One sentence of n units ending in ``mark``: ``"?"`` for a question, ``""`` for none, None: the style's.

    With ``mark=""`` all n units are words (a fragment without a stop).
    """
    one = _one_sentence(style, mark)
    return compose(stream, n, one, unit, first=first, offsets=offsets)


@cache
def _one_sentence(style: Style, mark: str | None) -> Style:
    marks = style.marks if mark is None else ((mark, 1.0),)
    return style.but(sentence=ONE_SENTENCE, marks=marks, para_sep=None)


def word_id(word: str) -> int:
    """The lexicon id of a common word (for forced first words such as question words)."""
    return _index()[word]


@cache
def _index() -> dict[str, int]:
    lex = lexicon()
    return {w: i for i, w in enumerate(lex.words[: lex.n_common])}
