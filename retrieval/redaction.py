"""Personal data in text -> typed placeholders ("[EMAIL]", "[PHONE]", ...), with a count of each kind replaced.

Used before text is chunked and stored (ingestion) or tokenised (`finetune prepare`), so neither the store nor an
adapter ever holds the originals. Numbers are found by a pattern and replaced only when a validator agrees: a phone
number must be valid in its numbering plan (phonenumbers, Google's libphonenumber), a card number must pass Luhn and
start like an issued card, an IBAN must pass its mod-97 check and its country's format, a national id its own check
digits or allocation rules (python-stdnum). That is what keeps part numbers, dates, totals, ISBNs and version strings
as they are. Ids whose check is weak (a plain 9 or 11 digits that one number in ten or eleven passes) are replaced
only after a label that names them ("BSN", "PESEL", "SSN: ..."), and so are plain account numbers, which have no
check at all. Names and addresses are not found: that needs a language model (Presidio's spaCy), which would have to
be downloaded.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from llama_index.core import Document
from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.de import idnr as de_idnr
from stdnum.dk import cpr as dk_cpr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fi import hetu as fi_hetu
from stdnum.fr import nir as fr_nir
from stdnum.gb import nhs as gb_nhs
from stdnum.it import codicefiscale as it_cf
from stdnum.nl import bsn as nl_bsn
from stdnum.pl import pesel as pl_pesel
from stdnum.se import personnummer as se_personnummer
from stdnum.us import ssn as us_ssn

__all__ = ["KINDS", "Redactor", "redact_documents"]

# kind (the key of the counts) -> what replaces it in the text
KINDS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "account": "[ACCOUNT]",
    "phone": "[PHONE]",
}

# How far before a number its label may stand ("Social security number (SSN): 536...").
LABEL_WINDOW = 40


@dataclass(frozen=True)
class _IdRule:
    pattern: re.Pattern
    is_valid: Callable[[str], bool]
    label: re.Pattern | None = None  # required within LABEL_WINDOW characters before the number


def _number(pattern: str) -> re.Pattern:
    # Not part of a longer token: "AB-536-22-4817" is a part number, "536-22-4817.2" a version; a full stop that
    # ends the sentence is fine.
    return re.compile(rf"(?<![\w./-])(?:{pattern})(?![\w]|[./-]\w)")


def _label(pattern: str) -> re.Pattern:
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


def _gb_nino_is_valid(number: str) -> bool:
    # python-stdnum has no UK National Insurance number; HMRC's allocation rules (manual NIM39110) are all there is
    # to check, as a NINO has no check digit.
    number = number.upper()
    return (
        number[0] not in "DFIQUV"
        and number[1] not in "DFIOQUV"
        and number[:2] not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
        and number[-1] in "ABCD"
    )


_SSN_LABEL = _label(r"ssn|social\s+security(?:\s+(?:number|no\.?))?")
_ID_RULES = (
    # A format of its own and a check: found wherever it stands.
    _IdRule(_number(r"\d{3}([- ])\d{2}\1\d{4}"), us_ssn.is_valid),  # stdnum: area, group and serial rules
    _IdRule(_number(r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]"), _gb_nino_is_valid),
    _IdRule(_number(r"[A-Z]{6}[\dL-NP-V]{2}[A-EHLMPR-T][\dL-NP-V]{2}[A-Z][\dL-NP-V]{3}[A-Z]"), it_cf.is_valid),
    _IdRule(_number(r"[XYZ]-?\d{7}-?[A-Z]"), es_nie.is_valid),
    _IdRule(_number(r"\d{8}-?[A-Z]"), es_dni.is_valid),
    _IdRule(_number(r"[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}"), fr_nir.is_valid),
    _IdRule(_number(r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}"), be_nn.is_valid),
    # A weak check or none: only after the label that names it.
    _IdRule(_number(r"\d{9}"), us_ssn.is_valid, _SSN_LABEL),
    _IdRule(_number(r"\d{3}[ -]?\d{3}[ -]?\d{4}"), gb_nhs.is_valid, _label(r"nhs(?:\s+(?:number|no\.?))?")),
    _IdRule(_number(r"\d{4}\.?\d{2}\.?\d{3}"), nl_bsn.is_valid, _label(r"bsn|burgerservicenummer|sofinummer")),
    _IdRule(_number(r"\d{11}"), pl_pesel.is_valid, _label(r"pesel")),
    _IdRule(
        _number(r"(?:\d{2})?\d{6}[-+]?\d{4}"),
        se_personnummer.is_valid,
        _label(r"personnummer|personal\s+identity\s+number"),
    ),
    _IdRule(_number(r"\d{6}-?\d{4}"), dk_cpr.is_valid, _label(r"cpr(?:-?nummer|\s+number|\s+no\.?)?")),
    _IdRule(
        _number(r"\d{6}[-+A-FU-Y]\d{3}[\dA-Y]"),
        fi_hetu.is_valid,
        _label(r"henkilötunnus|hetu|personal\s+identity\s+code|personbeteckning"),
    ),
    _IdRule(
        _number(r"\d{2} ?\d{3} ?\d{3} ?\d{3}"),
        de_idnr.is_valid,
        _label(r"steuer-?id(?:entifikationsnummer)?|idnr|tax\s+id(?:entification)?(?:\s+number)?"),
    ),
    _IdRule(
        _number(r"\d{11}"),
        be_nn.is_valid,
        _label(r"rijksregisternummer|num[ée]ro\s+national|national\s+(?:register\s+)?number|insz|niss"),
    ),
)

# The common address syntax, international letters included; quoted local parts and IP-literal domains are left:
# they are vanishingly rare in documents and a pattern for them would also match text that is not an address.
_EMAIL = re.compile(
    r"(?<![\w.%+'-])[\w%+-][\w.%+'-]*@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])",
)
# 13 to 19 digits, in groups or not, that are not part of a longer run of digits (a table row of years).
_CARD = re.compile(r"(?<![\w.,/-])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\w-]|[.,/]\d|[ -]\d)")
# The first digits of issued cards: Visa, Mastercard (with its 2221-2720 range), Maestro and Discover (5x, 6x),
# American Express, Diners and JCB (3x). Other first digits (airlines, health, national schemes) are not payment
# cards, and most numbers that pass Luhn by chance start with one of them or fall outside 2221-2720.
_CARD_PREFIX = re.compile(r"[456]|3[04-9]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)")
_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", re.IGNORECASE)
# A labelled bank account number; the label stays, so a reader still knows what was there.
_ACCOUNT = re.compile(
    r"\b(?:account|acct|a/c|konto|kontonummer|rekeningnummer)(?:\s*(?:number|num|no\.?|#))?\s*[:#]?\s*"
    r"(?P<number>\d(?:[ -]?\d){5,19})(?![\w-]|[.,/]\d)",
    re.IGNORECASE,
)


class Redactor:
    """Finds personal data and replaces it; `region` is where phone numbers written without +country are dialled."""

    def __init__(self, region: str = "US"):
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"unknown phone region {region!r}: use the two-letter ISO code of the country whose phone numbers "
                "documents write without a +country prefix (US, GB, DE, FR, ...)"
            )
        self.region = region

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """The text with each personal datum replaced by its kind's placeholder, and how many of each kind."""
        spans = self.find(text)
        counts: Counter[str] = Counter()
        parts, done = [], 0
        for start, end, kind in spans:
            parts += [text[done:start], KINDS[kind]]
            counts[kind] += 1
            done = end
        parts.append(text[done:])
        return "".join(parts), counts

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of each personal datum, none overlapping another."""
        taken: list[tuple[int, int, str]] = []  # sorted, and no two overlap
        # In KINDS' order: the first kind to claim characters keeps them, so the digits of an IBAN or a card number
        # never become a phone number, nor the digits of an e-mail address an id.
        for kind, spans in (
            ("email", ((m.start(), m.end()) for m in _EMAIL.finditer(text))),
            ("iban", _ibans(text)),
            ("card", _cards(text)),
            ("national_id", _national_ids(text)),
            ("account", ((m.start("number"), m.end("number")) for m in _ACCOUNT.finditer(text))),
            ("phone", self._phones(text)),
        ):
            for start, end in spans:
                # The spans kept never overlap, so only the two either side of where this one would go can overlap it.
                at = bisect.bisect_left(taken, (start,))
                if (at and taken[at - 1][1] > start) or (at < len(taken) and taken[at][0] < end):
                    continue
                taken.insert(at, (start, end, kind))
        return taken

    def _phones(self, text: str) -> Iterator[tuple[int, int]]:
        # VALID: the number must be one the numbering plan could have issued, not merely have a phone's length.
        for match in phonenumbers.PhoneNumberMatcher(text, self.region, leniency=phonenumbers.Leniency.VALID):
            yield match.start, match.end


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    position = 0
    while match := _IBAN.search(text, position):
        # The pattern runs on into following capitals and digits ("... 32 BIC NWBKGB2L"): the longest stretch
        # that ends where a group ends and validates is the IBAN.
        ends = [match.end()] + [i for i in range(match.end() - 1, match.start(), -1) if text[i] == " "]
        end = next((end for end in ends if iban.is_valid(text[match.start() : end])), None)
        if end is None:
            position = match.start() + 1
            continue
        yield match.start(), end
        position = end


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if _CARD_PREFIX.match(digits) and luhn.is_valid(digits):
            yield match.start(), match.end()


def _national_ids(text: str) -> Iterator[tuple[int, int]]:
    for rule in _ID_RULES:
        for match in rule.pattern.finditer(text):
            if rule.label and not rule.label.search(text, max(0, match.start() - LABEL_WINDOW), match.start()):
                continue
            if rule.is_valid(re.sub(r"\s", "", match.group())):
                yield match.start(), match.end()


def redact_documents(documents: Iterable[Document], redactor: Redactor) -> tuple[list[Document], Counter[str]]:
    """Loaded sections with their text, heading and recorded title redacted (a heading or a title can name a
    person as well as a text can)."""
    redacted, counts = [], Counter()
    for document in documents:
        text, found = redactor.redact(document.text)
        metadata = dict(document.metadata)
        for key in ("heading", "document_title", "document_running"):
            if value := metadata.get(key):
                metadata[key], in_value = redactor.redact(value)
                found += in_value
        counts += found
        redacted.append(Document(text=text, metadata=metadata))
    return redacted, counts
