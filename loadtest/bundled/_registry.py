"""All bundled sets by name, and the other spellings a caller may use for them."""

from __future__ import annotations

from . import _classification, _corpora, _qa, _summaries, _tokens
from ._spec import Spec

SPECS: dict[str, Spec] = {spec.name: spec for module in (_classification, _qa, _corpora, _tokens, _summaries)
                          for spec in module.SPECS}

ALIASES = {
    "glue/sst2": "sst2",
    "c4/en": "c4",
    "oscar/unshuffled_deduplicated_en": "oscar",
    "wikiann/en": "wikiann",
    "record": "super_glue/record",
    "wikitext/wikitext-103-raw-v1": "wikitext-103",
    "wikitext-103-raw-v1": "wikitext-103",
    "cnn_dailymail/3.0.0": "cnn_dailymail",
}


def resolve(name: str) -> Spec | None:
    """The spec for a name, a ``hub_id/config`` spelling or an alias; None if unknown."""
    return SPECS.get(name) or SPECS.get(ALIASES.get(name, ""))
