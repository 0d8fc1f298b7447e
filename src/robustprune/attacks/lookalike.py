"""Look-alike characters for TextBugger's "sub-C" bug (Li et al., NDSS 2019, "TextBugger").

TextBugger's sub-C replaces a character by a visually similar one ("o" → "0", "l" → "1").  The
paper gives only examples and textattack's homoglyph file is missing from its wheel, so this table
is our own: ASCII digits first (the paper's examples), then Unicode letters that render almost
like the Latin letter (Cyrillic, Greek, Armenian and a few IPA/Latin-extended letters).

Every look-alike is a single character that Python's regex ``\\w`` matches (a letter or digit).
``textattack.shared.utils.words_from_text`` splits words on any other character and strips
``'-_*@`` from word ends, so look-alikes such as ``$``, ``!``, ``|`` or ``@`` (``a`` → ``@``
deletes the word "a") would change the word count of a perturbed text; they are left out.
"""

from __future__ import annotations

from types import MappingProxyType

# character -> look-alikes, most similar first; code points in comments for the non-ASCII ones
_TABLE: dict[str, str] = {
    "a": "4\u0430\u0251\u03b1",  # Cyrillic a, Latin alpha, Greek alpha
    "b": "6\u0184\u042c",  # Latin tone six, Cyrillic soft sign (capital)
    "c": "\u0441\u03f2",  # Cyrillic es, Greek lunate sigma
    "d": "\u0501",  # Cyrillic komi de
    "e": "3\u0435",  # Cyrillic ie
    "g": "9\u0261",  # Latin script g
    "h": "\u04bb",  # Cyrillic shha
    "i": "1\u0456",  # Cyrillic byelorussian-ukrainian i
    "j": "\u0458",  # Cyrillic je
    "k": "\u03ba",  # Greek kappa
    "l": "1I\u04cf",  # capital i, Cyrillic palochka
    "n": "\u0578",  # Armenian vo
    "o": "0\u043e\u03bf",  # Cyrillic o, Greek omicron
    "p": "\u0440\u03c1",  # Cyrillic er, Greek rho
    "q": "\u051b",  # Cyrillic qa
    "r": "\u0433",  # Cyrillic ghe
    "s": "5\u0455",  # Cyrillic dze
    "t": "7",
    "u": "\u057d\u03c5",  # Armenian seh, Greek upsilon
    "v": "\u03bd\u0475",  # Greek nu, Cyrillic izhitsa
    "w": "\u051d\u0461",  # Cyrillic we, Cyrillic omega
    "x": "\u0445",  # Cyrillic ha
    "y": "\u0443",  # Cyrillic u
    "z": "2\u1d22",  # Latin small capital z
    "A": "4\u0410\u0391",  # Cyrillic A, Greek Alpha
    "B": "8\u0412\u0392",  # Cyrillic Ve, Greek Beta
    "C": "\u0421\u03f9",  # Cyrillic Es, Greek lunate Sigma
    "E": "3\u0415\u0395",  # Cyrillic Ie, Greek Epsilon
    "H": "\u041d\u0397",  # Cyrillic En, Greek Eta
    "I": "1l\u0406",  # small L, Cyrillic I
    "K": "\u041a\u039a",  # Cyrillic Ka, Greek Kappa
    "M": "\u041c\u039c",  # Cyrillic Em, Greek Mu
    "O": "0\u041e\u039f",  # Cyrillic O, Greek Omicron
    "P": "\u0420\u03a1",  # Cyrillic Er, Greek Rho
    "S": "5\u0405",  # Cyrillic Dze
    "T": "7\u0422\u03a4",  # Cyrillic Te, Greek Tau
    "X": "\u0425\u03a7",  # Cyrillic Ha, Greek Chi
    "Y": "\u04ae\u03a5",  # Cyrillic straight U, Greek Upsilon
    "Z": "2\u0396",  # Greek Zeta
}


def lookalike_table() -> dict[str, tuple[str, ...]]:
    """Character → visually similar single characters, most similar first (our own table, see module doc)."""
    return {char: tuple(alikes) for char, alikes in _TABLE.items()}


LOOKALIKES = MappingProxyType(lookalike_table())
