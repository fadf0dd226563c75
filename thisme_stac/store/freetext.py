"""Free-text ``q``: one meaning in every store (STAC API free-text search, basic level).

Each term is matched, case-insensitively, as a substring of an item's keywords, title or
description; an item matches when any term does (OR). So ``ital`` finds ``Central-Italy``.
A term written the THISME way, ``#Central-Italy``, is the site name without its ``#``, and a term
in double quotes is the phrase between them (quotes, like spaces, have no other meaning).
See docs/design/decisions.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The item properties free text is matched against (the SQLite store's ``text`` column).
FIELDS = ("keywords", "title", "description")


def free_text_terms(q: Sequence[str] | None) -> list[str]:
    """The lower-cased terms of ``q``, without surrounding quotes or a leading ``#``;
    empty terms are dropped (no terms: no constraint)."""
    terms: list[str] = []
    for raw in q or ():
        term = raw.strip()
        if len(term) >= 2 and term[0] == term[-1] == '"':
            term = term[1:-1].strip()
        term = term.removeprefix("#").strip().lower()
        if term and term not in terms:
            terms.append(term)
    return terms


def like_pattern(term: str) -> str:
    """A LIKE pattern matching ``term`` anywhere (``%``, ``_`` and ``\\`` taken literally)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def cql2_free_text(terms: Sequence[str]) -> dict[str, Any]:
    """CQL2-JSON matching any of ``terms`` in any of the free-text fields."""
    return {
        "op": "or",
        "args": [
            {"op": "ilike", "args": [{"property": field}, like_pattern(term)]}
            for term in terms
            for field in FIELDS
        ],
    }


def text_matches(terms: Sequence[str], *texts: object) -> bool:
    """Whether any term is in any of ``texts`` (for documents filtered in Python)."""
    lowered = [str(t).lower() for t in texts if t is not None]
    return any(term in text for term in terms for text in lowered)
