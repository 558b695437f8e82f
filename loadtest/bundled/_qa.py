"""Extractive QA twins: squad, squad_v2, sciq.

SQuAD rows share a context five at a time, like the real validation split (10,570 questions on 2,067
paragraphs), and every answer is a span of its context: ``context[start:start + len(text)] == text``.
"""

from __future__ import annotations

from functools import cache

from ._random import LogNormal, Stream
from ._spec import Context, Spec, Target
from ._styles import WIKI, hex_id, phrase
from ._text import Text, compose, sentence, word_id

SQUAD_PAPER = "https://aclanthology.org/D16-1264/"
SQUAD2_PAPER = "https://aclanthology.org/P18-2124/"
SCIQ_PAPER = "https://aclanthology.org/W17-4413/"
PER_CONTEXT, CONTEXTS_PER_TITLE = 5, 43  # validation: 10,570 questions / 2,067 paragraphs / 48 articles
NO_ANSWER_V2 = 5945 / 11873  # SQuAD 2.0 dev: unanswerable share
NO_SUPPORT_SCIQ = 1.0 - 10481 / 13679  # SciQ: questions published without a support paragraph

CONTEXT_LEN = LogNormal(120.0, 0.45, 20, 700)
QUESTION_LEN = LogNormal(10.0, 0.35, 3, 40)
ANSWER_LEN = LogNormal(3.2, 0.7, 1, 30)
SCIQ_QUESTION_LEN = LogNormal(14.0, 0.40, 4, 60)
SUPPORT_LEN = LogNormal(88.0, 0.60, 10, 600)
CHOICE_LEN = LogNormal(1.6, 0.45, 1, 6)
_WH = ("what", "what", "what", "who", "when", "which", "how", "where", "why", "in")


def _question(s: Stream, n: int) -> str:
    first = word_id(_WH[s.pick(len(_WH))])
    return sentence(s, n, WIKI, unit="words", mark="?", first=first).text


def _span(context: Text, s: Stream, n_words: int) -> tuple[str, int]:
    """An answer of about n_words words inside the context: (text, start)."""
    n_words = min(n_words, len(context.words))
    a = s.pick(len(context.words) - n_words + 1)
    last = context.words[a + n_words - 1].rstrip(",.?!")
    start = int(context.offsets[a])
    end = int(context.offsets[a + n_words - 1]) + len(last)
    return context.text[start:end], start


def _answers(context: Text, s: Stream) -> dict:
    """Three human answers as the validation split has: mostly identical, sometimes a word longer."""
    n = ANSWER_LEN.length(s.one())
    text, start = _span(context, s, n)
    texts, starts = [text] * 3, [start] * 3
    if s.one() < 0.3:
        rest = context.text[start + len(text):].split(" ", 2)
        if len(rest) >= 2 and rest[0] == "":
            texts[1] = (text + " " + rest[1]).rstrip(",.?!")
    return {"text": texts, "answer_start": starts}


def _squad_rows(ctx: Context, n: int, no_answer: float) -> list[dict]:
    @cache
    def context(g: int) -> Text:
        return compose(ctx.stream(g, kind=1), CONTEXT_LEN.length(ctx.quantile(g, 0)), WIKI, "words", offsets=True)

    @cache
    def title(t: int) -> str:
        s = ctx.stream(t, kind=2)
        return "_".join(w.capitalize() for w in sentence(s, 1 + s.pick(3), WIKI, "words").text.rstrip(".").split())

    rows = []
    for i in range(n):
        s, g = ctx.stream(i), i // PER_CONTEXT
        c = context(g)
        unanswerable = s.one() < no_answer
        answers = {"text": [], "answer_start": []} if unanswerable else _answers(c, s)
        rows.append({"id": hex_id(s, 24), "title": title(g // CONTEXTS_PER_TITLE), "context": c.text,
                     "question": _question(s, QUESTION_LEN.length(ctx.quantile(i, 1))), "answers": answers})
    return rows


def _squad(ctx: Context, n: int) -> list[dict]:
    return _squad_rows(ctx, n, 0.0)


def _squad_v2(ctx: Context, n: int) -> list[dict]:
    return _squad_rows(ctx, n, NO_ANSWER_V2)


def _choice(s: Stream) -> str:
    return phrase(s, CHOICE_LEN.length(s.one()), offset=4)


def _sciq(ctx: Context, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = ctx.stream(i)
        question = _question(s, SCIQ_QUESTION_LEN.length(ctx.quantile(i, 0)))
        choices = [_choice(s) for _ in range(4)]
        support = ""
        if s.one() >= NO_SUPPORT_SCIQ:
            support = compose(s, SUPPORT_LEN.length(ctx.quantile(i, 1)), WIKI, "words").text
        rows.append({"question": question, "distractor3": choices[3], "distractor1": choices[1],
                     "distractor2": choices[2], "correct_answer": choices[0], "support": support})
    return rows


_SQUAD_COLUMNS = {"id": "string", "title": "string", "context": "string", "question": "string",
                  "answers": "Sequence({text: string, answer_start: int32})"}
_SQUAD_NOTES = "answers are spans of the context; validation-style: three answers per question"


def _squad_targets(source: str) -> tuple[Target, ...]:
    return (
        Target("context", "words", 120.0, "paragraphs of ~120 words (consistent with the Hub's 990.8 bytes/row)",
               source, CONTEXT_LEN),
        Target("question", "words", 10.0, "questions of ~10 words", source, QUESTION_LEN),
    )


SPECS = (
    Spec(name="squad", hub_id="squad", config=None, split="validation", tasks=("question-answering",),
         columns=_SQUAD_COLUMNS, targets=_squad_targets(SQUAD_PAPER), hub_bytes_per_row=990.8, hub_script="squad",
         paper_usage="pipeline('question-answering')({'question': row['question'], 'context': row['context']})",
         notes=_SQUAD_NOTES + "; 5 questions share each context.", make=_squad),
    Spec(name="squad_v2", hub_id="squad_v2", config=None, split="validation", tasks=("question-answering",),
         columns=_SQUAD_COLUMNS,
         targets=_squad_targets(SQUAD2_PAPER) + (
             Target("answers.text", "items", 3.0 * (1 - NO_ANSWER_V2),
                    "5,945 of 11,873 dev questions unanswerable (empty answers)", SQUAD2_PAPER),),
         hub_bytes_per_row=982.1, hub_script="squad_v2",
         paper_usage="pipeline('question-answering')({'question': row['question'], 'context': row['context']})",
         notes=_SQUAD_NOTES + "; about half the questions have no answer, as in the dev set.", make=_squad_v2),
    Spec(name="sciq", hub_id="sciq", config=None, split="test", tasks=("question-answering",),
         columns={"question": "string", "distractor3": "string", "distractor1": "string", "distractor2": "string",
                  "correct_answer": "string", "support": "string"},
         targets=(Target("question", "words", 14.0, "no published figure; assumed 14 words", SCIQ_PAPER,
                         SCIQ_QUESTION_LEN),
                  Target("support", "chars", 410.0,
                         "10,481 of 13,679 questions have a support paragraph; mean support length derived "
                         "from the Hub's 564.8 bytes/row", SCIQ_PAPER)),
         hub_bytes_per_row=564.8, hub_script="sciq",
         paper_usage="pipeline('question-answering')({'question': row['question'], 'context': row['support']})",
         notes="About 23 % of supports are empty strings, as in the original.", make=_sciq),
)
