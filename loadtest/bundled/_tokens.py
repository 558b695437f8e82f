"""Token classification twins: conll2003, wikiann (en), super_glue/record.

conll2003 and wikiann rows are token lists with IOB2 tags (the Hub's ClassLabel ids); entity tokens are
capitalised synthetic names. ReCoRD rows are news passages with their entity mentions located by
character offsets, a cloze query with "@placeholder", and (as in the test split) no answers.
"""

from __future__ import annotations

import zlib

from ._lexicon import lexicon
from ._random import LogNormal, Stream
from ._spec import Context, Spec, Target
from ._styles import NEWS
from ._text import compose, sentence

CONLL_PAPER = "https://aclanthology.org/W03-0419/"
WIKIANN_PAPER = "https://aclanthology.org/P17-1178/"
RECORD_PAPER = "https://arxiv.org/abs/1810.12885"

CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
POS_TAGS = ('"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
            "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS",
            "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB")
CHUNK_TAGS = ("O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ", "B-LST",
              "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR", "B-UCP", "I-UCP",
              "B-VP", "I-VP")
# Placeholder grammar for the pos/chunk columns: a word's tag is fixed by its CRC (not by its meaning).
_WORD_POS = ("NN", "NN", "IN", "DT", "JJ", "NNS", "VBD", "RB", "VB", "PRP", "CC", "VBZ", "TO", "VBN")
_PHRASE = {"NN": "NP", "NNS": "NP", "NNP": "NP", "DT": "NP", "JJ": "NP", "CD": "NP", "PRP": "NP", "IN": "PP",
           "TO": "PP", "VB": "VP", "VBD": "VP", "VBZ": "VP", "VBN": "VP", "RB": "ADVP"}
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
# CoNLL-2003 development set: entities by type (LOC 1,837, MISC 922, ORG 1,341, PER 1,842) over 51,362 tokens.
CONLL_TYPES = (("PER", 1842), ("ORG", 1341), ("LOC", 1837), ("MISC", 922))
CONLL_ENTITY_RATE = 5942 / 51362
ENTITY_WORDS = {"PER": (0.35, 0.6, 0.05), "ORG": (0.5, 0.35, 0.15), "LOC": (0.85, 0.15, 0.0),
                "MISC": (0.7, 0.25, 0.05)}  # chance of 1, 2, 3 tokens (assumed)
# 51,362 tokens / 3,250 sentences (3,466 less the 216 -DOCSTART- lines the Hub drops) = 15.8.
CONLL_LEN = LogNormal(51362 / 3250, 0.75, 1, 124)
WIKIANN_LEN = LogNormal(8.0, 0.45, 2, 60)
PASSAGE_LEN = LogNormal(117.0, 0.45, 30, 700)
QUERY_LEN = LogNormal(24.0, 0.35, 6, 80)
TOKENS = NEWS.but(spaced=True, p_name=0.0)  # plain tokens around the entities, which are placed explicitly
RECORD_NEWS = NEWS.but(p_name=0.09)
HIGHLIGHTS = RECORD_NEWS.but(sentence=LogNormal(13.0, 0.35, 4, 30), marks=(("", 1.0),), para_sep="\n@highlight\n",
                             para_sentences=1.0)


def _pick_type(u: float, types: tuple[tuple[str, int], ...]) -> str:
    total, acc = sum(w for _, w in types), 0
    for name, w in types:
        acc += w
        if u * total < acc:
            return name
    return types[-1][0]


def _entity_length(u: float, kind: str) -> int:
    one, two, _ = ENTITY_WORDS[kind]
    return 1 if u < one else 2 if u < one + two else 3


def _tag(tokens: list[str], s: Stream, rate: float, types, tags: tuple[str, ...], at_least_one: bool):
    """Overwrite runs of word tokens with names; returns (tokens, tag ids, spans as (type, text))."""
    ids = [0] * len(tokens)
    spans: list[tuple[str, str]] = []
    u = s.uniform(3 * len(tokens) + 3).tolist()
    names = lexicon().words[lexicon().name_ids(s, len(tokens))].tolist()
    words = [j for j, t in enumerate(tokens) if t.isalpha()] or [0]
    force = words[s.pick(len(words))] if at_least_one else -1
    j = 0
    while j < len(tokens):
        if (u[3 * j] < rate and tokens[j].isalpha()) or j == force:
            kind = _pick_type(u[3 * j + 1], types)
            k = min(_entity_length(u[3 * j + 2], kind), len(tokens) - j)
            k = next((x for x in range(k) if not tokens[j + x].isalpha()), k) or 1
            tokens[j:j + k] = names[j:j + k]
            ids[j:j + k] = [tags.index("B-" + kind)] + [tags.index("I-" + kind)] * (k - 1)
            spans.append((kind, " ".join(tokens[j:j + k])))
            j += k
        else:
            j += 1
    return tokens, ids, spans


def _pos(token: str, ner: int) -> str:
    if ner:
        return "NNP"
    if not token[:1].isalnum():
        return token if token in POS_TAGS else ":"
    if token[:1].isdigit():
        return "CD"
    return _WORD_POS[zlib.crc32(token.lower().encode()) % len(_WORD_POS)]


def _grammar(tokens: list[str], ner: list[int]) -> tuple[list[int], list[int]]:
    """pos_tags and chunk_tags ids that look like CoNLL's (placeholders: there is no grammar to tag)."""
    pos = [_pos(t, e) for t, e in zip(tokens, ner, strict=True)]
    chunks, previous = [], "O"
    for tag in pos:
        phrase = _PHRASE.get(tag, "O")
        chunk = "O" if phrase == "O" else ("I-" if phrase == previous and phrase == "NP" else "B-") + phrase
        chunks.append(CHUNK_TAGS.index(chunk))
        previous = phrase
    return [POS_TAGS.index(t) for t in pos], chunks


def _conll2003(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        tokens = sentence(s, CONLL_LEN.length(ctx.quantile(i, 0)), TOKENS, mark=None).text.split()
        tokens, tags, _ = _tag(tokens, s, CONLL_ENTITY_RATE, CONLL_TYPES, CONLL_TAGS, False)
        pos, chunks = _grammar(tokens, tags)
        rows.append({"id": str(i), "tokens": tokens, "pos_tags": pos, "chunk_tags": chunks, "ner_tags": tags})
    return rows


def _wikiann(ctx: Context, n: int) -> list[dict]:
    rows = []
    types = (("PER", 1), ("ORG", 1), ("LOC", 1))
    for i in range(n):
        s = ctx.stream(i)
        tokens = sentence(s, WIKIANN_LEN.length(ctx.quantile(i, 0)), TOKENS, mark="").text.split()
        tokens, tags, spans = _tag(tokens, s, 0.25, types, WIKIANN_TAGS, True)
        rows.append({"tokens": tokens, "ner_tags": tags, "langs": ["en"] * len(tokens),
                     "spans": [f"{kind}: {text}" for kind, text in spans]})
    return rows


def _mentions(words: list[str], offsets, ids, base: int) -> list[tuple[str, int, int]]:
    a, b = lexicon().names
    out = []
    for w, o, k in zip(words, offsets.tolist(), ids.tolist(), strict=True):
        if a <= k < b:
            name = w.rstrip(",.?!")
            out.append((name, base + o, base + o + len(name)))
    return out


def _passage(s: Stream, length: int) -> tuple[str, list[tuple[str, int, int]]]:
    """A news body, then its highlights each after a line '@highlight' (as ReCoRD keeps them)."""
    body = compose(s, length, RECORD_NEWS, "words", offsets=True)
    count = 2 + s.pick(3)
    lines = compose(s, count * (8 + s.pick(12)), HIGHLIGHTS, "words", offsets=True)
    head = body.text + "\n@highlight\n"
    text = head + lines.text
    mentions = _mentions(body.words, body.offsets, body.ids, 0) + _mentions(lines.words, lines.offsets, lines.ids,
                                                                           len(head))
    return text, mentions


def _query(s: Stream, length: int) -> str:
    words = sentence(s, length, RECORD_NEWS, "words").text.split(" ")
    k = s.pick(len(words))
    tail = words[k][len(words[k].rstrip(",.?!")):]
    words[k] = "@placeholder" + tail
    return " ".join(words)


def _record(ctx: Context, n: int) -> list[dict]:
    rows, cache = [], {}
    for i in range(n):
        g = (2 * i) // 3  # 1.5 queries per passage
        if g not in cache:
            cache = {g: _passage(ctx.stream(g, kind=1), PASSAGE_LEN.length(ctx.quantile(g, 0)))}
        passage, mentions = cache[g]
        s = ctx.stream(i)
        rows.append({
            "passage": passage, "query": _query(s, QUERY_LEN.length(ctx.quantile(i, 1))),
            "entities": sorted({m[0] for m in mentions}),
            "entity_spans": {"text": [m[0] for m in mentions], "start": [m[1] for m in mentions],
                             "end": [m[2] for m in mentions]},
            "answers": [], "idx": {"passage": g, "query": i}})
    return rows


SPECS = (
    Spec(name="conll2003", hub_id="conll2003", config=None, split="validation", tasks=("token-classification",),
         columns={"id": "string", "tokens": "Sequence(string)", "pos_tags": "Sequence(ClassLabel(47 PTB tags))",
                  "chunk_tags": "Sequence(ClassLabel(23 chunk tags))",
                  "ner_tags": "Sequence(ClassLabel(" + ", ".join(CONLL_TAGS) + "))"},
         targets=(Target("tokens", "items", round(CONLL_LEN.mean, 2),
                         "development set: 51,362 tokens in 3,466 sentences incl. 216 -DOCSTART- lines "
                         "(the Hub's 3,250 rows) = 15.8 tokens per row; 5,942 entities", CONLL_PAPER, CONLL_LEN),),
         hub_bytes_per_row=535.1, hub_script="conll2003",
         paper_usage="pipeline('token-classification')(' '.join(row['tokens']))",
         notes="pos_tags and chunk_tags are placeholders with the real label sets (a word's tag is fixed by a "
               "hash, not by grammar). Entity types follow the development set's counts; entity lengths and the "
               "log-sd (0.75) are assumptions.", make=_conll2003),
    Spec(name="wikiann", hub_id="wikiann", config="en", split="test", tasks=("token-classification",),
         columns={"tokens": "Sequence(string)", "ner_tags": "Sequence(ClassLabel(" + ", ".join(WIKIANN_TAGS) + "))",
                  "langs": "Sequence(string)", "spans": "Sequence(string)"},
         targets=(Target("tokens", "items", 8.0, "no published length; ~8 tokens per row fits the Hub's 233.0 "
                         "Arrow bytes/row", WIKIANN_PAPER, WIKIANN_LEN),),
         hub_bytes_per_row=233.0, hub_script="wikiann",
         paper_usage="pipeline('token-classification')(' '.join(row['tokens']))",
         notes="Every row holds at least one entity, as WikiANN sentences do.", make=_wikiann),
    Spec(name="super_glue/record", hub_id="super_glue", config="record", split="test",
         tasks=("token-classification",),
         columns={"passage": "string", "query": "string", "entities": "Sequence(string)",
                  "entity_spans": "Sequence({text: string, start: int32, end: int32})",
                  "answers": "Sequence(string)", "idx": "{passage: int32, query: int32}"},
         targets=(Target("passage", "words", 160.0, "no published mean found; ~160 words fits the Hub's 1,720.1 "
                         "Arrow bytes/row", RECORD_PAPER),
                  Target("query", "words", 24.0, "assumed ~24 words (a highlight sentence)", RECORD_PAPER,
                         QUERY_LEN)),
         hub_bytes_per_row=1720.1, hub_script="super_glue",
         paper_usage="pipeline('token-classification')(row['passage'])",
         notes="Passages end with '@highlight' lines; entity_spans end offsets are exclusive (the Hub adds 1 to "
               "ReCoRD's inclusive ends). Answers are empty, as in the test split.", make=_record),
)
