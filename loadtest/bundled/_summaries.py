"""Summarization twins: cnn_dailymail (3.0.0), samsum, xsum."""

from __future__ import annotations

from functools import cache

from ._lexicon import lexicon
from ._random import LogNormal, Stream
from ._spec import Context, Spec, Target
from ._styles import NEWS, digit_id, hex_id
from ._text import Style, compose, prose, sentence

CNN_CARD = ("https://github.com/huggingface/datasets/blob/d7dfbc83d68e87ba002c5eb2555f7a932e59038a/"
            "datasets/cnn_dailymail/README.md")
SEE_2017 = "https://aclanthology.org/P17-1099/"
SAMSUM_PAPER = "https://aclanthology.org/D19-5409/"
DIALOGSUM = "https://aclanthology.org/2021.findings-acl.449/"
NARAYAN_2018 = "https://aclanthology.org/D18-1206/"

ARTICLE_LEN = LogNormal(781.0, 0.50, 60, 2800)
HIGHLIGHTS_LEN = LogNormal(56.0, 0.30, 12, 200)
DOCUMENT_LEN = LogNormal(431.07, 0.55, 30, 3000)
XSUM_SUMMARY_LEN = LogNormal(23.26, 0.25, 8, 60)
UTTERANCE_LEN = LogNormal(5.9, 0.65, 1, 60)
SAMSUM_SUMMARY_LEN = LogNormal(20.3, 0.45, 4, 80)

# Highlights: ~15-token sentences, one per line (3.75 sentences per summary on average).
HIGHLIGHT = NEWS.but(sentence=LogNormal(13.5, 0.35, 3, 40), comma_rate=0.03, para_sep="\n", para_sentences=1.0)
# XSum documents: one sentence per line, 431.07 tokens in 19.77 sentences = 21.8 tokens each.
BBC = NEWS.but(sentence=LogNormal(19.3, 0.45, 3, 80), para_sep="\n", para_sentences=1.0)
# Chat: short turns, lower-case starts are common, fewer full stops, more questions.
CHAT = Style(sentence=LogNormal(6.0, 0.6, 1, 40), comma_rate=0.05, p_rare=0.02, p_name=0.01, p_number=0.01,
             marks=((".", 0.35), ("?", 0.25), ("!", 0.15), ("", 0.15), (" :)", 0.05), (" :D", 0.05)), zipf_offset=1)
_TURNS = CHAT.but(sentence=LogNormal(6.0, 0.01, 1, 10**6))  # placeholder sentence model: turns set the ends
_UTTERANCE_GROUPS = ((3, 6), (7, 12), (13, 18), (19, 30))  # SAMSum: dialogues spread uniformly over these


def _cnn_dailymail(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        article = prose(s, ARTICLE_LEN.length(ctx.quantile(i, 0)), NEWS)
        if s.one() < 0.5:  # the two outlets' openings
            article = "(CNN)" + article
        else:
            name = lexicon().words[lexicon().name_ids(s, 2)]
            article = f"By . {name[0]} {name[1]} . {article}"
        highlights = prose(s, HIGHLIGHTS_LEN.length(ctx.quantile(i, 1)), HIGHLIGHT)
        rows.append({"article": article, "highlights": highlights, "id": hex_id(s, 40)})
    return rows


@cache
def _first_names() -> list[str]:
    a, b = lexicon().names
    return [w for w in lexicon().words[a:b].tolist() if 4 <= len(w) <= 7]


def _speakers(s: Stream) -> list[str]:
    count = 2 if s.one() < 0.75 else 3 + s.pick(2)  # ~75 % of SAMSum dialogues have two people
    names = _first_names()
    return list(dict.fromkeys(names[k] for k in s.below(count, len(names)).tolist()))


def _dialogue(s: Stream, q: float) -> tuple[str, list[str]]:
    lo, hi = _UTTERANCE_GROUPS[min(int(q * 4), 3)]
    turns = lo + s.pick(hi - lo + 1)
    people = _speakers(s)
    lengths = UTTERANCE_LEN.lengths(s.uniform(turns))
    who = [people[k % len(people)] if s.one() < 0.8 else people[s.pick(len(people))] for k in range(turns)]
    text = compose(s, int(lengths.sum()), _TURNS, "words", sentences=lengths)
    lines, at = [], 0
    for name, k in zip(who, lengths.tolist(), strict=True):
        lines.append(f"{name}: " + " ".join(text.words[at:at + k]))
        at += k
    return "\r\n".join(lines), people


def _samsum(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        dialogue, people = _dialogue(s, ctx.quantile(i, 0))
        length = SAMSUM_SUMMARY_LEN.length(ctx.quantile(i, 1))
        subject = " and ".join(people[:2])
        rest = sentence(s, max(1, length - len(subject.split())), NEWS, "words").text
        summary = f"{subject} {rest[:1].lower()}{rest[1:]}"
        rows.append({"id": digit_id(s, 8), "dialogue": dialogue, "summary": summary})
    return rows


def _xsum(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        document = prose(s, DOCUMENT_LEN.length(ctx.quantile(i, 0)), BBC)
        summary = sentence(s, XSUM_SUMMARY_LEN.length(ctx.quantile(i, 1)), NEWS).text
        rows.append({"document": document, "summary": summary, "id": digit_id(s, 8)})
    return rows


SPECS = (
    Spec(name="cnn_dailymail", hub_id="cnn_dailymail", config="3.0.0", split="test", tasks=("summarization",),
         columns={"article": "string", "highlights": "string", "id": "string"},
         targets=(Target("article", "tokens", 781.0, "articles of 781 tokens on average (Hub card; See et al. 2017)",
                         CNN_CARD, ARTICLE_LEN),
                  Target("highlights", "tokens", 56.0, "highlights of 56 tokens, 3.75 sentences on average",
                         SEE_2017, HIGHLIGHTS_LEN)),
         hub_bytes_per_row=4345.1, hub_script="cnn_dailymail",
         paper_usage="pipeline('summarization')(row['article'], min_length=10, max_length=15)",
         notes="Highlights are one sentence per line; ids are 40 hex digits like the SHA-1 of a URL.",
         make=_cnn_dailymail),
    Spec(name="samsum", hub_id="samsum", config=None, split="train", tasks=("summarization",),
         columns={"id": "string", "dialogue": "string", "summary": "string"},
         targets=(Target("dialogue", "words", 94.0,
                         "dialogues of 93.8 words, summaries of 20.3 (DialogSum paper, Table 1); 3-30 utterances "
                         "spread uniformly over 3-6, 7-12, 13-18, 19-30 (SAMSum card)", DIALOGSUM),
                  Target("summary", "words", 20.3, "summaries of 20.3 words", DIALOGSUM, SAMSUM_SUMMARY_LEN)),
         hub_bytes_per_row=643.4, hub_script="samsum",
         paper_usage="pipeline('summarization')(row['dialogue'], min_length=10, max_length=15)",
         notes="Lines are 'Name: utterance' joined by \\r\\n as in the original; ~75 % of dialogues have two "
               "speakers (SAMSum paper).", make=_samsum),
    Spec(name="xsum", hub_id="xsum", config=None, split="test", tasks=("summarization",),
         columns={"document": "string", "summary": "string", "id": "string"},
         targets=(Target("document", "tokens", 431.07, "documents of 431.07 words (tokens) in 19.77 sentences",
                         NARAYAN_2018, DOCUMENT_LEN),
                  Target("summary", "tokens", 23.26, "one-sentence summaries of 23.26 words (tokens)", NARAYAN_2018,
                         XSUM_SUMMARY_LEN)),
         hub_bytes_per_row=2360.7, hub_script="xsum",
         paper_usage="pipeline('summarization')(row['document'], min_length=10, max_length=15) (the paper's script "
                     "passes a stale variable here; the intent is the document)",
         notes="Document sentences are one per line, as in the Hub version.", make=_xsum),
)
