"""House styles of the imitated corpora, and small helpers for ids and short phrases."""

from __future__ import annotations

import numpy as np

from ._lexicon import lexicon, zipf_cdf
from ._random import LogNormal, Stream
from ._text import Style

# Encyclopaedic prose (SQuAD, SciQ, WikiText): longer words, more names and numbers.
WIKI = Style(sentence=LogNormal(22.0, 0.45, 3, 90), comma_rate=0.07, p_rare=0.05, p_name=0.05, p_number=0.025,
             marks=((".", 1.0),), zipf_offset=4)
# News (CNN/DailyMail, XSum, ReCoRD): one- or two-sentence paragraphs, many names.
NEWS = Style(sentence=LogNormal(20.0, 0.45, 3, 80), comma_rate=0.06, p_rare=0.04, p_name=0.05, p_number=0.02,
             marks=((".", 0.97), ("?", 0.02), ("!", 0.01)), zipf_offset=1)
# Web pages (C4, OSCAR): lines of varying length.
WEB = Style(sentence=LogNormal(17.0, 0.6, 2, 90), comma_rate=0.06, p_rare=0.05, p_name=0.04, p_number=0.03,
            marks=((".", 0.9), ("!", 0.04), ("?", 0.03), (":", 0.03)), para_sep="\n", para_sentences=2.5,
            zipf_offset=2)


def hex_id(stream: Stream, digits: int) -> str:
    """A lowercase hexadecimal id of ``digits`` digits (SQuAD: 24, CNN/DailyMail's SHA-1: 40)."""
    raw = stream.raw((digits + 15) // 16)
    return "".join(f"{int(x):016x}" for x in raw)[:digits]


def digit_id(stream: Stream, digits: int) -> str:
    """A decimal id of ``digits`` digits, no leading zero (SAMSum, XSum)."""
    lo = 10 ** (digits - 1)
    return str(lo + stream.pick(9 * lo))


def phrase(stream: Stream, k: int, offset: int = 1) -> str:
    """``k`` lower-case common words, no punctuation: a cheap short answer or label."""
    cdf = zipf_cdf(offset)
    ids = np.searchsorted(cdf, stream.below(k, int(cdf[-1])), side="right")
    return " ".join(lexicon().words[ids].tolist())
