"""Codenames, the keys derived from them, and the bound on concurrent derivations."""

from __future__ import annotations

import math
import threading
import time

import pytest
from nacl import pwhash
from nacl.public import PrivateKey

from intake.wordlists.layout import as_typed_on_latin_layout, as_typed_on_russian_layout
from intake.wordlists.vocabulary import RUSSIAN
from intake.codename import (
    EFF_WORDS,
    InvalidCodenameError,
    KdfBusyError,
    KdfGate,
    derive_source_keys,
    generate_codename,
    normalize_codename,
)

FAST = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
SALT = bytes(range(16))


def test_codename_has_seven_eff_words_and_at_least_90_bits():
    words = generate_codename().split(" ")
    assert len(words) == 7 and all(word in EFF_WORDS for word in words)
    assert len(set(EFF_WORDS)) == 7776
    # Words are drawn without replacement: log2(7776 * 7775 * ... * 7770), just under 7 * log2(7776).
    assert sum(math.log2(len(set(EFF_WORDS)) - drawn) for drawn in range(7)) >= 90


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_codename_never_repeats_a_word(language: str):
    """With replacement, 0.3-0.7% of codenames had a word twice, which a source may "correct"."""
    for _ in range(3000):
        words = generate_codename(language=language).split(" ")
        assert len(set(words)) == len(words), words


def test_russian_codename_has_eight_words_of_the_russian_list():
    words = generate_codename(language="ru").split(" ")
    assert len(words) == 8 and all(word in RUSSIAN.words for word in words)
    with pytest.raises(ValueError):
        generate_codename(7, language="ru")  # 84 bits: under the floor


def test_russian_codename_typed_with_layout_mistakes_prefixes_and_spaces_is_normalised():
    codename = generate_codename(language="ru")
    words = codename.split()
    typed = [
        as_typed_on_latin_layout(words[0]),  # forgot to switch layout
        words[1].upper().replace("Ё", "Е"),
        words[2][:4],  # four letters are enough
        as_typed_on_latin_layout(words[3][:4]).upper(),
        *words[4:],
    ]
    assert normalize_codename("\t " + "   ".join(typed) + " \n") == codename


def test_english_codename_typed_on_the_russian_layout_is_normalised():
    codename = generate_codename()
    assert normalize_codename(as_typed_on_russian_layout(codename)) == codename


def test_codename_made_before_russian_lists_keeps_its_keys():
    # Made by the generator and derivation of the commit before the Russian list (eb05c1d).
    keys = derive_source_keys("jailer pectin vengeful shawl tapered turmoil dreamland", SALT, **FAST)
    assert keys.lookup_id.hex() == "051a5a7614843fba8b95cce79e98583b606c318c4c6ec87772156f398ac5ca63"
    assert keys.reply_public_key.hex() == "4dfbeafe4fcbb9fdfb7871afeac018528b29b43b073b1defb39c4da690048d60"
    assert derive_source_keys("JAILER  pectin vengeful shawl tapered turmoil DREAMLAND", SALT, **FAST) == keys


def test_one_wrong_word_is_refused_without_saying_which():
    words = generate_codename(language="ru").split()
    words[5] = "qqqqqq"
    with pytest.raises(InvalidCodenameError) as refused:
        normalize_codename(" ".join(words))
    assert str(refused.value) == "this is not a valid codename"


def test_codenames_are_random():
    assert len({generate_codename() for _ in range(50)}) == 50


def test_shorter_codenames_cannot_be_generated():
    with pytest.raises(ValueError):
        generate_codename(6)


def test_typed_codename_is_normalised():
    codename = generate_codename()
    typed = "  " + codename.upper().replace(" ", " \t\n ") + "\n"
    assert normalize_codename(typed) == codename


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abacus " * 6,  # too few words
        "abacus " * 25,  # too many
        "abacus abacus abacus abacus abacus abacus notaneffword",
        "abacus abacus abacus abacus abacus abacus abacus!",
    ],
)
def test_text_that_is_not_a_codename_is_refused(text: str):
    with pytest.raises(InvalidCodenameError) as refused:
        normalize_codename(text)
    assert str(refused.value) == "this is not a valid codename"  # never echoes what was typed


def test_derivation_is_stable_for_the_same_codename_however_typed():
    codename = generate_codename()
    first = derive_source_keys(codename, SALT, **FAST)
    again = derive_source_keys(codename.upper().replace(" ", "  "), SALT, **FAST)
    assert first == again


def test_different_codename_or_salt_gives_different_keys():
    codename = generate_codename()
    base = derive_source_keys(codename, SALT, **FAST)
    assert derive_source_keys(generate_codename(), SALT, **FAST).lookup_id != base.lookup_id
    assert derive_source_keys(codename, bytes(16), **FAST).lookup_id != base.lookup_id


def test_lookup_id_and_reply_key_are_domain_separated_and_consistent():
    keys = derive_source_keys(generate_codename(), SALT, **FAST)
    assert len(keys.lookup_id) == 32
    assert keys.lookup_id not in (keys.reply_secret_key, keys.reply_public_key)
    assert bytes(PrivateKey(keys.reply_secret_key).public_key) == keys.reply_public_key


def test_derived_secrets_stay_out_of_repr():
    keys = derive_source_keys(generate_codename(), SALT, **FAST)
    assert keys.lookup_id.hex() not in repr(keys) and repr(keys.reply_secret_key) not in repr(keys)


def test_invalid_codename_is_refused_before_any_derivation():
    with pytest.raises(InvalidCodenameError):
        # A memlimit Argon2id would refuse: the codename check must come first.
        derive_source_keys("not a codename", SALT, opslimit=1, memlimit=1)


def _hold(release: threading.Event, running: list, lock: threading.Lock, peak: list) -> str:
    with lock:
        running.append(1)
        peak[0] = max(peak[0], len(running))
    release.wait(5)
    with lock:
        running.pop()
    return "done"


def test_gate_runs_at_most_concurrency_and_refuses_beyond_the_queue():
    gate = KdfGate(concurrency=2, queue=3, timeout=5)
    release, lock, running, peak = threading.Event(), threading.Lock(), [], [0]
    results: list = []

    def call():
        try:
            results.append(gate.run(_hold, release, running, lock, peak))
        except KdfBusyError:
            results.append("busy")

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(running) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # let the other three reach the queue
    started = time.monotonic()
    with pytest.raises(KdfBusyError):
        gate.run(lambda: "never")  # two running, three waiting: refused at once
    assert time.monotonic() - started < 0.5
    release.set()
    for thread in threads:
        thread.join(5)
    assert results.count("done") == 5 and peak[0] == 2
    assert gate.run(lambda: "free again") == "free again"


def test_gate_refuses_a_call_that_waited_too_long():
    gate = KdfGate(concurrency=1, queue=1, timeout=0.1)
    release = threading.Event()
    holder = threading.Thread(target=gate.run, args=(release.wait, 5))
    holder.start()
    time.sleep(0.05)
    with pytest.raises(KdfBusyError):
        gate.run(lambda: "late")
    release.set()
    holder.join(5)


def test_gate_frees_its_slot_when_the_call_fails():
    gate = KdfGate(concurrency=1, queue=0, timeout=1)
    with pytest.raises(ZeroDivisionError):
        gate.run(lambda: 1 / 0)
    assert gate.run(lambda: "ok") == "ok"


def test_gate_uses_the_given_runner():
    calls = []

    def runner(fn, *args, **kwargs):
        calls.append(fn)
        return fn(*args, **kwargs)

    gate = KdfGate(concurrency=1, queue=0, timeout=1, runner=runner)
    assert gate.run(derive_source_keys, generate_codename(), SALT, **FAST).lookup_id
    assert calls == [derive_source_keys]
