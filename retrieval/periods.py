"""Periods as documents state them and questions name them: fiscal years, quarters, years and dates.

A document's period is the first one its opening states, in order of how precisely it names what the
document covers: a fiscal year or quarter ("Fiscal Year 2019", "FY 2022-2026", "Q3 2023"), else a
date ("September 13, 2023", "26/10/2023", "February 2020"), else a range or a year. A question's period
is the years it names; "latest" and its like ask for the newest edition. dateutil reads the dates, so
that every way of writing a month is one parser's job, not ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from dateutil import parser as dateparser

_YEAR = r"(?:19|20)\d{2}"
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_FISCAL = re.compile(
    rf"\b(?:FY|fiscal\s+years?)\s*({_YEAR})(?:\s*(?:-|–|—|to|through)\s*(?:FY\s*)?({_YEAR}|\d{{2}}))?\b", re.IGNORECASE
)
_QUARTER = re.compile(
    rf"\b(?:Q([1-4])\s*(?:FY\s*)?({_YEAR})|(first|second|third|fourth)\s+(?:fiscal\s+)?quarter\s+(?:of\s+)?"
    rf"(?:fiscal\s+)?(?:year\s+)?({_YEAR}))\b",
    re.IGNORECASE,
)
_DATE = re.compile(
    rf"\b(?:{_MONTH}\.?\s+\d{{1,2}},?\s+{_YEAR}|\d{{1,2}}\s+{_MONTH}\.?,?\s+{_YEAR}|{_MONTH}\.?,?\s+{_YEAR}|"
    rf"\d{{1,2}}[/.]\d{{1,2}}[/.]{_YEAR}|{_YEAR}-\d{{2}}-\d{{2}})\b",
    re.IGNORECASE,
)
_RANGE = re.compile(rf"\b({_YEAR})\s*(?:-|–|—|to)\s*({_YEAR})\b")
_BARE_YEAR = re.compile(rf"\b({_YEAR})\b")
_ORDINAL = {"first": 1, "second": 2, "third": 3, "fourth": 4}
_LATEST = re.compile(r"\b(latest|most recent|newest|current|this year'?s|last year'?s)\b", re.IGNORECASE)
# A range longer than this is a history ("since 1990-2020"), not the period a document covers.
_MAX_SPAN = 10


@dataclass(frozen=True)
class Period:
    label: str  # as a person writes it: "FY 2019", "Q3 2023", "2022-2026", "2023-09-13"
    years: tuple[int, ...]
    dated: str | None = None  # an ISO date the document states, when it states one

    @property
    def order(self) -> tuple[int, str]:
        """Sorts editions: the later period, then the later date."""
        return (max(self.years) if self.years else 0, self.dated or "")


def find_period(text: str, bare_years: bool = True) -> Period | None:
    """``bare_years``: whether a year alone, or a range of years, names the period. In a title or on a title
    page it does ("Annual Report 2016"); in the first words of prose it is usually a year the text talks about
    ("In 2005, ..."), so there only a fiscal year, a quarter or a date counts."""
    if match := _QUARTER.search(text):
        number = int(match.group(1)) if match.group(1) else _ORDINAL[match.group(3).lower()]
        year = int(match.group(2) or match.group(4))
        return Period(f"Q{number} {year}", (year,), _date(text))
    if match := _FISCAL.search(text):
        first = int(match.group(1))
        last = _end_year(first, match.group(2))
        label = f"FY {first}" if last == first else f"FY {first}-{last}"
        return Period(label, tuple(range(first, last + 1)), _date(text))
    if dated := _date(text):
        if bare_years and (match := _RANGE.search(text)):
            first, last = int(match.group(1)), int(match.group(2))
            if 0 <= last - first <= _MAX_SPAN:
                return Period(f"{first}-{last}", tuple(range(first, last + 1)), dated)
        return Period(dated, (int(dated[:4]),), dated)
    if not bare_years:
        return None
    if match := _RANGE.search(text):
        first, last = int(match.group(1)), int(match.group(2))
        if 0 <= last - first <= _MAX_SPAN:
            return Period(f"{first}-{last}", tuple(range(first, last + 1)))
    if match := _BARE_YEAR.search(text):
        return Period(match.group(1), (int(match.group(1)),))
    return None


@dataclass(frozen=True)
class Asked:
    """The period a question names: the years it names, or that it wants the newest edition."""

    years: frozenset[int]
    latest: bool

    @property
    def named(self) -> bool:
        return bool(self.years) or self.latest


def asked_period(question: str) -> Asked:
    years: set[int] = set()
    for match in _FISCAL.finditer(question):
        first = int(match.group(1))
        years.update(range(first, _end_year(first, match.group(2)) + 1))
    years.update(int(year) for year in _BARE_YEAR.findall(question))
    for match in _QUARTER.finditer(question):
        years.add(int(match.group(2) or match.group(4)))
    return Asked(frozenset(years), bool(_LATEST.search(question)))


def _end_year(first: int, text: str | None) -> int:
    if not text:
        return first
    last = int(text) if len(text) == 4 else (first // 100) * 100 + int(text)
    return last if 0 <= last - first <= _MAX_SPAN else first


def _date(text: str) -> str | None:
    """The first date written in the text, as an ISO date (the first of the month where only a month is)."""
    for match in _DATE.finditer(text):
        written = match.group(0)
        try:
            # 26/10/2023 can only be day first; 12/08/2007 is read month first, as US forms write it.
            day_first = bool(re.match(r"(1[3-9]|2\d|3[01])[/.]", written))
            parsed = dateparser.parse(written, default=datetime(2000, 1, 1), dayfirst=day_first)
        except (ValueError, OverflowError):
            continue
        if parsed is not None:
            return parsed.date().isoformat()
    return None
