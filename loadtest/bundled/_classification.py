"""Text classification twins: imdb, sst2, rotten_tomatoes."""

from __future__ import annotations

from ._random import LogNormal
from ._spec import Context, Spec, Target
from ._text import ONE_SENTENCE, Style, prose

KIM_2014 = "https://aclanthology.org/D14-1181/"
IMDB_LEN = LogNormal.from_median(230.0, 174.0, 10, 2500)
SST2_LEN = LogNormal(19.0, 0.50, 2, 56)
RT_LEN = LogNormal(20.0, 0.50, 2, 59)

# Reviews: cased, punctuation attached, paragraphs split by the HTML line breaks the raw reviews keep.
REVIEW = Style(sentence=LogNormal(17.0, 0.55, 2, 90), comma_rate=0.06, para_sep="<br /><br />", para_sentences=5.0,
               marks=((".", 0.86), ("!", 0.06), ("?", 0.03), ("...", 0.05)))
# SST and the Pang & Lee sentences are lower-cased and pre-tokenised ("it 's a charming journey .").
SNIPPET = Style(cased=False, spaced=True, sentence=ONE_SENTENCE, comma_rate=0.05,
                marks=((".", 0.88), ("!", 0.05), ("?", 0.02), ("...", 0.05)))


def _imdb(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        rows.append({"text": prose(s, IMDB_LEN.length(ctx.quantile(i, 0)), REVIEW, unit="words"), "label": s.pick(2)})
    return rows


def _sst2(ctx: Context, n: int) -> list[dict]:
    # The test split's labels are hidden on the Hub (-1); the twin keeps that.
    return [{"idx": i, "sentence": prose(ctx.stream(i), SST2_LEN.length(ctx.quantile(i, 0)), SNIPPET), "label": -1}
            for i in range(n)]


def _rotten_tomatoes(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        rows.append({"text": prose(s, RT_LEN.length(ctx.quantile(i, 0)), SNIPPET), "label": s.pick(2)})
    return rows


SPECS = (
    Spec(
        name="imdb", hub_id="imdb", config=None, split="test", tasks=("text-classification",),
        columns={"text": "string", "label": "ClassLabel(neg, pos)"},
        targets=(Target("text", "words", 230.0, "1,294 chars/review on average (Hub bytes); ~230 words",
                        "https://ai.stanford.edu/~amaas/data/sentiment/", IMDB_LEN),),
        hub_bytes_per_row=1306.0, hub_script="imdb",
        paper_usage="pipeline('text-classification')(row['text']), one row per call",
        notes="Median (174 words) is an assumption giving a right-skewed log-normal; no published median found. "
              "Labels are balanced at random (the Hub's test split lists all negatives first).",
        make=_imdb),
    Spec(
        name="sst2", hub_id="sst2", config=None, split="test", tasks=("text-classification",),
        columns={"idx": "int32", "sentence": "string", "label": "ClassLabel(negative, positive)"},
        targets=(Target("sentence", "tokens", 19.0, "average sentence length 19 (SST-2, Kim 2014 Table 1)",
                        KIM_2014, SST2_LEN),),
        hub_bytes_per_row=119.5, hub_script="glue",
        paper_usage="pipeline('text-classification')(row['sentence'])",
        notes="Lower-cased and pre-tokenised like the original. Labels are -1 as in the Hub's test split.",
        make=_sst2),
    Spec(
        name="rotten_tomatoes", hub_id="rotten_tomatoes", config=None, split="validation",
        tasks=("text-classification",), columns={"text": "string", "label": "ClassLabel(neg, pos)"},
        targets=(Target("text", "tokens", 20.0, "average sentence length 20 (MR, Kim 2014 Table 1)", KIM_2014,
                        RT_LEN),),
        hub_bytes_per_row=126.3, hub_script="rotten_tomatoes",
        paper_usage="pipeline('text-classification')(row['text'])",
        notes="Lower-cased and pre-tokenised like the original Pang & Lee sentence polarity data.",
        make=_rotten_tomatoes),
)
