"""Each moderation detector against a labelled corpus: precision and recall, printed and asserted.

Positives and negatives per detector, with the tricky ones a pattern alone gets wrong: a card number that fails
Luhn, a phone-like order number, an IBAN with a bad checksum, an SSN published in advertising, an image name
that looks like an address, a password that is a phrase. A few harmful-content positives are paraphrases the
lexicon is known to miss (docs/moderation.md: blind spots), so its recall is measured, not assumed.
All numbers and keys below are published test values or made up; none belongs to anyone.
"""

from __future__ import annotations

import pytest

from openft.data.moderation import matches_in
from openft.data.moderation.findings import excerpt

# (text, detectors expected in it)
CORPUS: dict[str, list[tuple[str, set[str]]]] = {
    "payment_card": [
        ("My Visa is 4111 1111 1111 1111, expiry 12/29.", {"payment_card"}),
        ("card: 4012888888881881", {"payment_card"}),
        ("Mastercard 5555-5555-5555-4444 please", {"payment_card"}),
        ("new MC range 2223003122003222 works", {"payment_card"}),
        ("Amex 378282246310005 on file", {"payment_card"}),
        ("Discover 6011 1111 1111 1117", {"payment_card"}),
        ("JCB 3530111333300000", {"payment_card"}),
        ("Diners 30569309025904 charged", {"payment_card"}),
        ("Card 4111 1111 1111 1112 (fails Luhn)", set()),
        ("Card 5555 5555 5555 4445 was declined", set()),
        ("Order 1000000000000008 shipped", set()),  # Luhn-valid but no card network starts with 1
        ("timestamp 1700000000000 ms", set()),
        ("ISBN 978-3-16-148410-0", set()),
        ("1234 5678 9012 3456 is a placeholder", set()),
    ],
    "iban": [
        ("Pay to DE89 3704 0044 0532 0130 00 by Friday", {"iban"}),
        ("IBAN GB82 WEST 1234 5698 7654 32", {"iban"}),
        ("FR14 2004 1010 0505 0001 3M02 606", {"iban"}),
        ("account NL91ABNA0417164300.", {"iban"}),
        ("ES9121000418450200051332", {"iban"}),
        ("Swiss CH9300762011623852957 ok", {"iban"}),
        ("Pay to DE88 3704 0044 0532 0130 00 by Friday", set()),  # bad mod-97 checksum
        ("GB82 WEST 1234 5698 7654 33", set()),
        ("NL91ABNA0417164301", set()),
        ("part US12 3456 7890 1234 5 in stock", set()),  # no US IBANs
        ("model XY12ABCD3456EFGH78 released", set()),
    ],
    "email": [
        ("Write to jane.doe@gmail.com for details", {"email"}),
        ("cc j.smith+news@company.co.uk", {"email"}),
        ("contact: ops-team@acme-corp.io.", {"email"}),
        ("Send it to user@example.com", set()),  # reserved for documentation
        ("admin@staging.test", set()),
        ("follow @openft on social media", set()),
        ("use icon@2x.png on retina screens", set()),
        ("npm install pkg@1.2.3", set()),
    ],
    "phone": [
        ("Call me at (415) 555-2671 tomorrow", {"phone"}),
        ("London office +44 20 7946 0958", {"phone"}),
        ("Paris: +33 1 42 68 53 00", {"phone"}),
        ("Berlin +49 30 901820", {"phone"}),
        ("HQ +1 650-253-0000", {"phone"}),
        ("Order #4155552671 shipped today", set()),  # phone-shaped order number
        ("order number 20231115-4471", set()),
        ("ref 1234567890", set()),
        ("version 3.14.159265", set()),
        ("between 2019-2023 we grew", set()),
        ("1,234,567 people", set()),
        ("call 911 now", set()),
    ],
    "national_id": [
        ("SSN 536-90-4399 on the form", {"national_id"}),
        ("DNI 54362315K", {"national_id"}),
        ("NIE X2482300W", {"national_id"}),
        ("codice fiscale RCCMNL83S18D969H", {"national_id"}),
        ("NIR 2 95 10 99 126 111 93", {"national_id"}),
        ("NHS number 943 476 5919", {"national_id"}),
        ("SSN 078-05-1120", set()),  # the Woolworth wallet card number, published in advertising
        ("SSN 666-12-3456", set()),  # area 666 is never issued
        ("SSN 000-12-3456", set()),
        ("DNI 54362315A", set()),  # wrong check letter
        ("codice fiscale RCCMNL83S18D969A", set()),
        ("NHS number 943 476 5918", set()),  # bad mod-11 check digit
        ("date 2023-11-15", set()),
    ],
    "secret": [
        ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", {"secret"}),
        ("token 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", {"secret"}),
        ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", {"secret"}),
        ("OPENAI_API_KEY=sk-proj-4f9a8B7c6D5e4F3g2H1i0J9k8L7m6N5o4P3q2R1s0T", {"secret"}),
        ("key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", {"secret"}),
        ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 is my token", {"secret"}),
        ("-----BEGIN RSA PRIVATE KEY-----", {"secret"}),
        (
            "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            {"secret"},
        ),
        ("api_key = 'x9F2kLm8Qp4Zr7Tw'", {"secret"}),
        ("Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", {"secret"}),
        ('password = "see below"', set()),
        ("the commit sha is 3f786850e387550fdab836ed7e6dc881de23001b", set()),
        ("token count = 12345678", set()),
        ("uuid 123e4567-e89b-12d3-a456-426614174000", set()),
        ("sk-learn is not a real package name", set()),
        ("a bearer of bad news", set()),
        ("https://en.wikipedia.org/wiki/Python_(programming_language)", set()),
        ("my secret = banana_bread_recipe", set()),
    ],
    "harmful": [
        ("I'm going to kill myself tonight", {"harmful"}),
        ("what is the most painless way to die", {"harmful"}),
        ("how do i make a pipe bomb", {"harmful"}),
        ("how to cook meth at home", {"harmful"}),
        ("I will kill you if you come back", {"harmful"}),
        ("You are a worthless piece of shit", {"harmful"}),
        ("shut up you stupid fucking idiot", {"harmful"}),
        ("how can I hack into my ex's email account", {"harmful"}),
        ("nobody would miss me if I were gone", {"harmful"}),  # paraphrased self-harm: a known miss
        ("I know where you live and I'm coming for you", {"harmful"}),  # implicit threat: a known miss
        ("How do I kill a Python process that hangs?", set()),
        ("The bomb squad defused it safely", set()),
        ("A history of the atomic bomb in the 1940s", set()),
        ("That comedian killed it last night", set()),
        ("Use kill -9 to stop the server", set()),
        ("The recipe needs two cups of flour", set()),
        ("Please summarise this meeting in three bullet points", set()),
        ("She was dead tired after the marathon", set()),
    ],
}
THRESHOLDS = {  # (precision, recall) each detector must reach on its corpus
    "payment_card": (0.95, 0.95),
    "iban": (0.95, 0.95),
    "email": (0.95, 0.95),
    "phone": (0.9, 0.9),
    "national_id": (0.95, 0.95),
    "secret": (0.9, 0.9),
    "harmful": (0.9, 0.7),
}


def measure(detector: str) -> tuple[float, float, list[str]]:
    tp = fp = fn = 0
    mistakes = []
    for text, expected in CORPUS[detector]:
        found = detector in {m.detector for m in matches_in(text)}
        want = detector in expected
        tp += found and want
        fp += found and not want
        fn += want and not found
        if found != want:
            mistakes.append(f"{'missed' if want else 'false positive'}: {text!r}")
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, mistakes


@pytest.mark.parametrize("detector", sorted(CORPUS))
def test_detector_precision_and_recall(detector, capsys):
    precision, recall, mistakes = measure(detector)
    positives = sum(bool(e) for _, e in CORPUS[detector])
    with capsys.disabled():
        print(
            f"\n[moderation] {detector:13s} precision {precision:.2f} recall {recall:.2f} "
            f"({positives} positives, {len(CORPUS[detector]) - positives} negatives)"
            + "".join(f"\n    {m}" for m in mistakes)
        )
    min_precision, min_recall = THRESHOLDS[detector]
    assert precision >= min_precision and recall >= min_recall, mistakes


@pytest.mark.parametrize(
    "text",
    [
        "OPENAI_API_KEY=sk-proj-4f9a8B7c6D5e4F3g2H1i0J9k8L7m6N5o4P3q2R1s0T",
        "token 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 and AKIAIOSFODNN7EXAMPLE",
        "card 4111 1111 1111 1111 next to jane.doe@gmail.com and DE89 3704 0044 0532 0130 00",
        # a message the classifier flags whole: its excerpt must still hide the key inside it
        "You stupid fucking idiot, your key is sk-proj-4f9a8B7c6D5e4F3g2H1i0J9k8L7m6N5o4P3q2R1s0T, shut up",
    ],
)
def test_excerpts_never_repeat_a_secret_or_number_in_full(text):
    matches = matches_in(text)
    assert matches
    for m in matches:
        shown = excerpt(text, m, matches)
        for other in matches:
            value = text[other.start : other.end]
            assert value not in shown, (value, shown)
            if other.detector == "secret":
                assert value[4:12] not in shown  # at most a 4-character prefix of a secret


def test_findings_name_their_category_and_kind():
    (card,) = matches_in("pay with 378282246310005")
    assert (card.detector, card.category) == ("payment_card", "personal_data/payment_card")
    assert card.note == "American Express"
    threat = {m.category for m in matches_in("I will kill you")}
    assert {"harassment/threatening", "violence"} <= threat
