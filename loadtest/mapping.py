"""One table: how a dataset row becomes a task's request (``POST /v1/models/{name}/infer`` body).

Each task needs roles (``text``; ``question`` + ``context``); a dataset entry maps roles to its columns. A role
left out maps to the known column of the paper's datasets (e.g. ``sentence`` for sst2, ``article`` for
cnn_dailymail), else to a column of the role's own name. Token lists (conll2003, wikiann) are joined with
spaces. Fill-mask puts the model's mask token in place of one word, chosen deterministically per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class MappingError(ValueError):
    """The dataset's columns do not give what the task needs."""


TASK_ROLES: dict[str, tuple[str, ...]] = {
    "feature-extraction": ("text",),
    "text-classification": ("text",),
    "token-classification": ("text",),
    "fill-mask": ("text",),
    "text-generation": ("text",),
    "summarization": ("text",),
    "question-answering": ("question", "context"),
}

# the columns of the paper's datasets (Table 1) and their bundled twins, by dataset name
KNOWN_COLUMNS: dict[str, dict[str, str]] = {
    "imdb": {"text": "text"}, "sst2": {"text": "sentence"}, "rotten_tomatoes": {"text": "text"},
    "squad": {"question": "question", "context": "context"},
    "squad_v2": {"question": "question", "context": "context"},
    "sciq": {"question": "question", "context": "support"},
    "bookcorpus": {"text": "text"}, "c4": {"text": "text"}, "oscar": {"text": "text"},
    "conll2003": {"text": "tokens"}, "wikiann": {"text": "tokens"}, "super_glue/record": {"text": "passage"},
    "record": {"text": "passage"},
    "wikitext": {"text": "text"}, "wikitext-103": {"text": "text"},
    "cnn_dailymail": {"text": "article"}, "samsum": {"text": "dialogue"}, "xsum": {"text": "document"},
}

MASK_SEARCH_WORDS = 64  # the masked word is among the first words, so truncation never cuts the mask off


@dataclass(frozen=True)
class RequestBuilder:
    task: str
    columns: dict[str, str]  # role -> column
    template: str | None = None  # e.g. "Summarize the following text: {text}. Summary:"
    options: Mapping[str, Any] | None = None  # generation arguments and other request fields
    mask_token: str | None = None

    def body(self, row: Mapping[str, Any], index: int) -> dict[str, Any]:
        values = {role: text_of(row[column]) for role, column in self.columns.items()}
        if self.task == "question-answering":
            inputs: Any = {"question": values["question"], "context": values["context"]}
        else:
            text = values["text"]
            if self.template:
                text = self.template.format(text=text)
            if self.task == "fill-mask":
                text = _mask(text, self.mask_token, index)
            inputs = text
        return {"inputs": inputs, **(self.options or {})}


def text_of(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _mask(text: str, mask_token: str | None, index: int) -> str:
    if not mask_token:
        raise MappingError("fill-mask needs the model's mask token (the server's /v1/models gives it)")
    if mask_token in text:
        return text
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words[:MASK_SEARCH_WORDS]) if any(c.isalpha() for c in w)]
    if not candidates:
        return f"{text} {mask_token}".strip()
    i = candidates[(index * 7919) % len(candidates)]  # deterministic, spread over positions
    word = words[i]
    core = "".join(c for c in word if c.isalnum())
    words[i] = word.replace(core, mask_token, 1) if core else mask_token
    return " ".join(words)


def resolve_columns(task: str, dataset: str, columns: Mapping[str, str], available: list[str]) -> dict[str, str]:
    """Role -> column for this task and dataset; a clear error naming the column and what exists."""
    roles = TASK_ROLES.get(task)
    if roles is None:
        raise MappingError(f"campaigns do not know task {task!r}; known: {', '.join(TASK_ROLES)}")
    unknown_roles = sorted(set(columns) - set(roles))
    if unknown_roles:
        raise MappingError(f"dataset {dataset}: column mapping names role(s) {', '.join(unknown_roles)}, but task "
                           f"{task} takes {', '.join(roles)}")
    known = KNOWN_COLUMNS.get(dataset, {})
    out = {}
    for role in roles:
        column = columns.get(role) or known.get(role) or role
        if column not in available:
            raise MappingError(f"dataset {dataset}: no column {column!r} for {role!r} (task {task}); its columns: "
                               f"{', '.join(available)}; map it with columns: {{{role}: <column>}}")
        out[role] = column
    return out
