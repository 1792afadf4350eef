"""PII redaction: personal data in real-looking text becomes typed placeholders; look-alike numbers stay."""

from __future__ import annotations

import argparse
import json

import pytest
from tiny_models import write_tokenizer

from assistant import Settings, User
from finetune import dataset
from finetune.prepare import PrepareError, add_arguments, prepare, run
from retrieval.redaction import Redactor
from retrieval.settings import RetrievalSettings

ADMIN = User("root", ("admin",))

HR_LETTER = """Dear Ms Okafor,

Further to our meeting on 14 March 2024, we confirm your appointment as Senior Analyst from 1 May 2024 at an
annual salary of £58,500 (grade 7, employee number E-20417). The National Insurance number we hold for you is
JG 10 37 59 A: tell us at once if it is wrong.

Your salary will be paid into the account you gave us, IBAN GB82 WEST 1234 5698 7654 32 (BIC NWBKGB2L).

If you have questions, call Priya Raman in HR on 0161 496 0018 or write to priya.raman@northwind-hr.co.uk.
"""

INCIDENT_REPORT = """Incident INC-2024-00871, opened 2024-06-03 14:22 UTC
Reporter: Dana Whitfield (dana.whitfield@contoso.com, +1 (415) 555-2671)
A laptop, serial C02XK1ABJGH5, asset tag 4410-2231-0097, firmware 10.14.6 (build 18G103), was left in a taxi.
It held a spreadsheet with an employee's SSN 536-22-4817 and her mobile 415.555.0132.
Replacement cost: $1,249.99. Ticket escalated to the service desk at 192.168.10.254.
"""

CUSTOMER_EMAIL = """From: Marco Bianchi <marco.bianchi@example.it>
Subject: Order #558213 not delivered

Hello, my order #558213 (placed 12/05/2024, total €349.90) has not arrived; tracking 1Z999AA10123456784.

Best regards,
Marco Bianchi
Codice fiscale: RSSMRA85T10A562S
Tel. +39 06 4991 2345 | Mob. +39 347 123 4567
"""

PAYMENT_DISPUTE = """I dispute a charge of $2,310.00 made on 2024-04-18 by Globex Travel to my card 4539 1488 0343 6467
(expiry 09/27). A second charge appeared on my other card, 5555-5555-5555-4444, and on my Amex 378282246310005.
The merchant's dispute reference is 7731 0042 9981 2233.
"""

PAYROLL_TABLE = """| Employee | IBAN | Amount |
| --- | --- | --- |
| K. Müller | DE89 3704 0044 0532 0130 00 | 4,210.55 EUR |
| J. Dupont | FR14 2004 1010 0505 0001 3M02 606 | 3,980.00 EUR |
| Invoice ref | RF18 5390 0754 7034 | 120.00 EUR |
"""


def redact(text: str, region: str = "US") -> tuple[str, dict]:
    return Redactor(region).redact(text)


def test_an_hr_letter_keeps_its_dates_and_amounts():
    text, counts = redact(HR_LETTER, "GB")

    assert counts == {"national_id": 1, "iban": 1, "phone": 1, "email": 1}
    assert "NI number" not in text and "number we hold for you is\n[NATIONAL_ID]: tell us" in text
    assert "IBAN [IBAN] (BIC NWBKGB2L)" in text
    assert "call Priya Raman in HR on [PHONE] or write to [EMAIL]." in text
    for kept in ("14 March 2024", "1 May 2024", "£58,500", "grade 7", "E-20417"):
        assert kept in text


def test_an_incident_report_keeps_its_serials_versions_and_addresses():
    text, counts = redact(INCIDENT_REPORT)

    assert counts == {"email": 1, "phone": 2, "national_id": 1}
    assert "Reporter: Dana Whitfield ([EMAIL], [PHONE])" in text
    assert "SSN [NATIONAL_ID] and her mobile [PHONE]." in text
    for kept in (
        "INC-2024-00871",
        "2024-06-03 14:22 UTC",
        "C02XK1ABJGH5",
        "4410-2231-0097",
        "10.14.6 (build 18G103)",
        "$1,249.99",
        "192.168.10.254",
    ):
        assert kept in text


def test_a_customer_email_and_its_signature():
    text, counts = redact(CUSTOMER_EMAIL)

    assert counts == {"email": 1, "national_id": 1, "phone": 2}
    assert text.startswith("From: Marco Bianchi <[EMAIL]>")
    assert "Codice fiscale: [NATIONAL_ID]\nTel. [PHONE] | Mob. [PHONE]" in text
    for kept in ("Order #558213", "12/05/2024", "€349.90", "1Z999AA10123456784"):
        assert kept in text


def test_a_payment_dispute_loses_its_card_numbers_and_keeps_the_reference():
    text, counts = redact(PAYMENT_DISPUTE)

    assert counts == {"card": 3}
    assert "to my card [CARD]\n(expiry 09/27)" in text and "other card, [CARD], and on my Amex [CARD]." in text
    # Luhn-valid, but no card starts with 7.
    assert "$2,310.00" in text and "2024-04-18" in text and "7731 0042 9981 2233" in text


def test_ibans_in_a_table_row_and_a_creditor_reference_that_is_not_one():
    text, counts = redact(PAYROLL_TABLE)

    assert counts == {"iban": 2}
    assert "| K. Müller | [IBAN] | 4,210.55 EUR |" in text
    assert "| J. Dupont | [IBAN] | 3,980.00 EUR |" in text
    assert "| Invoice ref | RF18 5390 0754 7034 | 120.00 EUR |" in text


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("SSN: 536-22-4817.", "SSN: [NATIONAL_ID]."),
        ("Social security number 536224817 on file", "Social security number [NATIONAL_ID] on file"),
        ("NINO AB 12 34 56 C", "NINO [NATIONAL_ID]"),
        ("NHS number 943 476 5919", "NHS number [NATIONAL_ID]"),
        ("DNI 12345678Z, NIE X-1234567-L", "DNI [NATIONAL_ID], NIE [NATIONAL_ID]"),
        ("numéro de sécurité sociale 2 95 10 99 126 111 93", "numéro de sécurité sociale [NATIONAL_ID]"),
        ("rijksregisternummer 85.07.30-033.28", "rijksregisternummer [NATIONAL_ID]"),
        ("BSN: 111222333; PESEL 44051401359", "BSN: [NATIONAL_ID]; PESEL [NATIONAL_ID]"),
        ("personnummer 19880320-0016, CPR-nummer 211062-5629", "personnummer [NATIONAL_ID], CPR-nummer [NATIONAL_ID]"),
        ("henkilötunnus 131052-308T, Steuer-ID 36 574 261 809", "henkilötunnus [NATIONAL_ID], Steuer-ID [NATIONAL_ID]"),
        ("Account number: 12345678, acct #0012345678", "Account number: [ACCOUNT], acct #[ACCOUNT]"),
        # The address claims its digits before any phone rule sees them.
        ("texts to 4155552671@txt.att.net", "texts to [EMAIL]"),
    ],
)
def test_national_ids_and_labelled_numbers(sentence, expected):
    assert redact(sentence)[0] == expected


@pytest.mark.parametrize("region", ["US", "GB", "DE"])
@pytest.mark.parametrize(
    "text",
    [
        "Replace part AB-1234-5678 with part AB-1234-5679.",
        "ISBN 978-0-306-40615-7, ISBN-13 9780306406157",
        "Shipped 2024-01-15, invoiced 15/01/2024 at 10:15, due 2024.02.14",
        "Total: $1,234,567.89 (EUR 1.234.567,89; 1 250 000,00 SEK)",
        "Upgrade from v10.2.3.4567 to 11.0.1081 (build 22H2).",
        "Serial SN 123-456-7890, batches 000-00-0000 and 666-12-3456 (no SSN has area 000 or 666)",
        "Card-like but failing Luhn: 4111 1111 1111 1112, 4539148803436468",
        "Luhn-valid but no card: 1234567812345670, and the years 2019 2020 2021 2020",
        "Order 111222333 and invoice 240115-0042 (no label says they are ids)",
        "Account 3 of 5 was reconciled; accounts payable 2024",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "Contact us at the front desk, room 4.12, ext. 4417.",
    ],
)
def test_numbers_that_only_look_personal_stay(text, region):
    assert redact(text, region) == (text, {})


def test_an_unknown_region_says_what_to_give():
    with pytest.raises(ValueError, match="two-letter ISO code"):
        Redactor("XX")
    assert RetrievalSettings(pii_region="gb").pii_region == "GB"
    with pytest.raises(ValueError, match="ASSISTANT_PII_REGION"):
        Settings(pii_region="Narnia")


# --- ingestion --------------------------------------------------------------------------------

DISPUTE_DOCUMENT = """# Card disputes

## Contact dana.whitfield@contoso.com

The customer Dana Whitfield called from (415) 555-2671 about a refund of $2,310.00 to card 4539 1488 0343 6467.
The refund was approved on 2024-04-18 under part number AB-1234-5678.
"""
ORIGINALS = ("dana.whitfield@contoso.com", "555-2671", "4539 1488 0343 6467")


def ingest_dispute(assistant, tmp_path):
    path = tmp_path / "disputes.md"
    path.write_text(DISPUTE_DOCUMENT)
    return assistant.ingest([path])


def test_ingestion_stores_and_searches_only_the_placeholders(make_assistant, tmp_path):
    assistant = make_assistant(redact_pii=True)
    report = ingest_dispute(assistant, tmp_path)

    assert report.redacted == {"email": 1, "phone": 1, "card": 1}
    assert "; redacted 1 card, 1 email, 1 phone" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["redacted"] == {"email": 1, "phone": 1, "card": 1}
    hits = assistant.search("refund to a card after a customer called", ADMIN, k=20)
    assert hits and all(hit.path.endswith("disputes.md") for hit in hits)
    seen = "\n".join(f"{hit.heading}\n{hit.text}" for hit in hits)
    assert not [original for original in ORIGINALS if original in seen]
    assert "called from [PHONE]" in seen and "to card [CARD]" in seen and "Contact [EMAIL]" in seen
    assert "AB-1234-5678" in seen and "$2,310.00" in seen


def test_without_the_setting_ingestion_keeps_the_text_as_written(make_assistant, tmp_path):
    assistant = make_assistant()
    report = ingest_dispute(assistant, tmp_path)

    assert not report.redacted and "redacted" not in report.summary()
    hits = assistant.search("refund to a card after a customer called", ADMIN, k=20)
    seen = "\n".join(f"{hit.heading}\n{hit.text}" for hit in hits)
    assert all(original in seen for original in ORIGINALS)


def test_switching_redaction_on_rewrites_what_is_already_stored(make_assistant, tmp_path):
    store = str(tmp_path / "qdrant")
    with make_assistant(qdrant_path=store) as plain:
        assert ingest_dispute(plain, tmp_path).added
    redacting = make_assistant(qdrant_path=store, redact_pii=True)

    report = ingest_dispute(redacting, tmp_path)

    # The file did not change, but its stored text did not follow the policy: read again, every chunk replaced.
    assert report.updated and report.redacted == {"email": 1, "phone": 1, "card": 1}
    chunks, _ = redacting.store.scroll_chunks(limit=1000)
    stored = "\n".join(node.text for node in chunks)
    assert not [original for original in ORIGINALS if original in stored] and "[CARD]" in stored
    (record,) = redacting.documents(ADMIN)
    assert record.chunks == len(chunks) and redacting.store.get_document(record.doc_id).redacted
    assert ingest_dispute(redacting, tmp_path).unchanged  # and from then on it is the stored version


# --- finetune prepare --------------------------------------------------------------------------

EXAMPLES = [
    {"text": "Escalations go to Dana Whitfield, dana.whitfield@contoso.com, +1 (415) 555-2671."},
    {
        "messages": [
            {"role": "user", "content": "Which IBAN does payroll use for K. Müller?"},
            {"role": "assistant", "content": "DE89 3704 0044 0532 0130 00, as of 2024-01-15."},
        ]
    },
]
PREPARE_ORIGINALS = (*ORIGINALS, "DE89 3704 0044 0532 0130 00")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    write_tokenizer(directory)
    return directory


@pytest.fixture
def sources(tmp_path):
    document = tmp_path / "disputes.md"
    document.write_text(DISPUTE_DOCUMENT)
    examples = tmp_path / "examples.jsonl"
    examples.write_text("\n".join(json.dumps(example) for example in EXAMPLES) + "\n")
    return [document, examples]


def dataset_text(out, model_dir) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return "\n".join(
        tokenizer.decode(dataset.load_split(out, name).input_ids.flatten().tolist()) for name in dataset.SPLITS
    )


def test_prepare_redacts_documents_and_examples_before_tokenising(model_dir, sources, tmp_path):
    report = prepare(model_dir, tmp_path / "out", sources, seq_len=64, redact_pii=True, pii_region="US")

    text = dataset_text(tmp_path / "out", model_dir)
    assert not [original for original in PREPARE_ORIGINALS if original in text]
    assert "[EMAIL]" in text and "[PHONE]" in text and "[CARD]" in text and "[IBAN], as of 2024-01-15" in text
    assert report.manifest["redacted"] == {"card": 1, "email": 2, "iban": 1, "phone": 2}
    assert dataset.read_manifest(tmp_path / "out")["redacted"] == report.manifest["redacted"]
    assert "; redacted 1 card, 2 email, 1 iban, 2 phone" in report.summary()


def test_prepare_without_redaction_keeps_the_originals(model_dir, sources, tmp_path, monkeypatch):
    monkeypatch.delenv("ASSISTANT_REDACT_PII", raising=False)
    report = prepare(model_dir, tmp_path / "out", sources, seq_len=64)

    text = dataset_text(tmp_path / "out", model_dir)
    assert all(original in text for original in PREPARE_ORIGINALS)
    assert report.manifest["redacted"] is None and "redacted" not in report.summary()


def invoke(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([str(arg) for arg in argv]))


def test_the_command_follows_the_assistants_setting_unless_told(model_dir, sources, tmp_path, monkeypatch, capsys):
    common = ["--model", model_dir, "--source", sources[0], "--source", sources[1], "--seq-len", 64, "--json"]
    monkeypatch.setenv("ASSISTANT_REDACT_PII", "true")
    monkeypatch.setenv("ASSISTANT_PII_REGION", "gb")

    assert invoke(*common, "--out", tmp_path / "a") == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["redacted"] == {"card": 1, "email": 2, "iban": 1, "phone": 1}
    text = dataset_text(tmp_path / "a", model_dir)
    # Read as dialled in the UK, a US number without +1 is no phone number; the one with +1 is.
    assert "called from (415) 555-2671" in text and "+1 (415) 555-2671" not in text
    assert not [original for original in PREPARE_ORIGINALS if original in text and original != "555-2671"]

    assert invoke(*common, "--out", tmp_path / "b", "--no-redact-pii") == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["redacted"] is None

    monkeypatch.setenv("ASSISTANT_REDACT_PII", "maybe")
    with pytest.raises(PrepareError, match="ASSISTANT_REDACT_PII='maybe': Input should be a valid boolean"):
        prepare(model_dir, tmp_path / "c", sources, seq_len=64)
    # A broken installation setting stops prepare whatever the flags say (the assistant would not start with it).
    assert invoke(*common, "--out", tmp_path / "d", "--redact-pii") == 2
    monkeypatch.setenv("ASSISTANT_REDACT_PII", "true")
    assert invoke(*common, "--out", tmp_path / "d", "--redact-pii", "--pii-region", "Narnia") == 2
    assert "--pii-region" in capsys.readouterr().err
