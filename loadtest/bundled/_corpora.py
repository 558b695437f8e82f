"""Language-modelling corpora twins: bookcorpus, c4 (en), oscar (unshuffled_deduplicated_en), wikitext-103."""

from __future__ import annotations

from ._random import LogNormal, Stream
from ._spec import Context, Spec, Target
from ._styles import WEB, WIKI, phrase
from ._text import Style, compose, prose, sentence

ZHU_2015 = "https://arxiv.org/abs/1506.06724"
DODGE_2021 = "https://aclanthology.org/2021.emnlp-main.98/"
OSCAR_CARD = ("https://github.com/huggingface/datasets/blob/d7dfbc83d68e87ba002c5eb2555f7a932e59038a/"
              "datasets/oscar/README.md")
MERITY_2016 = "https://arxiv.org/abs/1609.07843"

# 984,846,357 words in 74,004,228 sentences (Zhu et al. 2015, Table 2; the Hub's row count is the same).
BOOK_LEN = LogNormal.from_median(984_846_357 / 74_004_228, 11.0, 2, 200)
C4_LEN = LogNormal(372.0, 1.0, 10, 12_000)
# 215,841,256,971 words in 304,230,423 documents (the Hub card's table for unshuffled_deduplicated_en).
OSCAR_LEN = LogNormal(215_841_256_971 / 304_230_423, 1.1, 10, 30_000)
PARAGRAPH_LEN = LogNormal(122.0, 0.6, 5, 800)

# BookCorpus as on the Hub: one lower-cased, pre-tokenised sentence per row.
BOOK = Style(cased=False, spaced=True, comma_rate=0.07, p_rare=0.03, p_name=0.03, p_number=0.005,
             marks=((".", 0.8), ("?", 0.07), ("!", 0.06), ("''", 0.07)), zipf_offset=1)
# WikiText "raw": cased, pre-tokenised with spaces around punctuation.
WIKITEXT = WIKI.but(spaced=True, zipf_offset=1)


def _bookcorpus(ctx: Context, n: int) -> list[dict]:
    return [{"text": sentence(ctx.stream(i), BOOK_LEN.length(ctx.quantile(i, 0)), BOOK, mark=None).text}
            for i in range(n)]


def _c4(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        text = prose(s, C4_LEN.length(ctx.quantile(i, 0)), WEB, unit="words")
        day, second = 18 + s.pick(9), s.pick(86_400)
        stamp = f"2019-04-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        url = f"https://www.{phrase(s, 2).replace(' ', '')}.example/{phrase(s, 3).replace(' ', '-')}"
        rows.append({"text": text, "timestamp": stamp, "url": url})
    return rows


def _oscar(ctx: Context, n: int) -> list[dict]:
    return [{"id": i, "text": prose(ctx.stream(i), OSCAR_LEN.length(ctx.quantile(i, 0)), WEB, unit="words")}
            for i in range(n)]


def _heading(s: Stream, level: int) -> str:
    marks = " ".join("=" * level)
    title = sentence(s, 1 + s.pick(4), WIKITEXT, "words", mark="").text
    return f" {marks} {title} {marks} \n"


def _article(s: Stream, ctx: Context, a: int) -> list[str]:
    """One article's rows as in the raw files: headings fenced by empty rows, paragraphs back to back."""
    rows = ["", _heading(s, 1), ""]
    sections = 4 + s.pick(13)  # 4..16 headed sections after the lead
    for k in range(sections + 1):
        if k:
            rows += [_heading(s, 2 if s.one() < 0.8 else 3), ""]
        for p in range(1 + s.pick(4 if k else 3)):
            length = PARAGRAPH_LEN.length(ctx.quantile(a * 64 + k * 8 + p, 0))
            rows.append(" " + compose(s, length, WIKITEXT, "tokens").text + " \n")
        if k < sections:
            rows.append("")
    return rows


def _wikitext(ctx: Context, n: int) -> list[dict]:
    rows: list[str] = []
    a = 0
    while len(rows) < n:
        rows += _article(ctx.stream(a, kind=1), ctx, a)
        a += 1
    return [{"text": t} for t in rows[:n]]


SPECS = (
    Spec(name="bookcorpus", hub_id="bookcorpus", config=None, split="train",
         tasks=("fill-mask", "text-generation"), columns={"text": "string"},
         targets=(Target("text", "tokens", round(BOOK_LEN.mean, 2),
                         "984,846,357 words / 74,004,228 sentences = 13.3 words per sentence (mean), median 11",
                         ZHU_2015, BOOK_LEN),),
         hub_bytes_per_row=65.6, hub_script="bookcorpus",
         paper_usage="fill-mask: row['text'] with '.' removed plus the mask token; text-generation: the first "
                     "20 whitespace words",
         notes="Lower-cased, pre-tokenised sentences, one per row.", make=_bookcorpus),
    Spec(name="c4", hub_id="c4", config="en", split="train", tasks=("fill-mask",),
         columns={"text": "string", "timestamp": "string", "url": "string"},
         targets=(Target("text", "chars", 2174.0,
                         "2,270.9 Arrow bytes/row on the Hub, of which ~2,174 are text; 365M documents, "
                         "156B tokens (Dodge et al. 2021)", DODGE_2021),
                  Target("text", "words", 372.0, "~372 words at the 5.85 characters per word measured on real prose",
                         DODGE_2021, C4_LEN)),
         hub_bytes_per_row=2270.9, hub_script="c4",
         paper_usage="fill-mask: the first 20 whitespace words, the last one replaced by the mask token",
         notes="URLs use the reserved .example domain. Spread (log-sd 1.0) assumed for web pages.", make=_c4),
    Spec(name="oscar", hub_id="oscar", config="unshuffled_deduplicated_en", split="train",
         tasks=("fill-mask", "text-generation"), columns={"id": "int64", "text": "string"},
         targets=(Target("text", "words", round(OSCAR_LEN.mean, 1),
                         "215,841,256,971 words / 304,230,423 documents = 709.5 words per document", OSCAR_CARD,
                         OSCAR_LEN),),
         hub_bytes_per_row=4265.2, hub_script="oscar",
         paper_usage="fill-mask and text-generation: the first 20 whitespace words",
         notes="Spread (log-sd 1.1) assumed for web documents.", make=_oscar),
    Spec(name="wikitext-103", hub_id="wikitext", config="wikitext-103-raw-v1", split="test",
         tasks=("text-generation",), columns={"text": "string"},
         targets=(Target("text", "words", 56.3,
                         "245,569 tokens in the test set (Merity et al. 2016) over the Hub's 4,358 rows = 56.3 per "
                         "row, empty rows included", MERITY_2016),),
         hub_bytes_per_row=299.5, hub_script="wikitext",
         paper_usage="text-generation: the first 20 whitespace words of each of the first 1,000 rows "
                     "(empty rows included: the paper's filter compared against the string '\"\"')",
         notes="Rows are lines of articles: ' = Title = ', section headings fenced by empty rows, paragraphs with "
               "spaces around punctuation; about a third of the rows are empty strings.", make=_wikitext),
)
