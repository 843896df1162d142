"""The word lists codenames are made of, and how a typed word is matched to one.

English: the EFF large wordlist (7,776 words, shipped by the diceware package).
Russian: ru.txt, built by build_ru.py from free frequency and dictionary data
(provenance, licence and selection rules in README.md). Its words are found from
their first four letters, with or without the dots of ё, and the words of either
list typed on the other keyboard layout are never found in the other list, so
`vocabulary.resolve_word` undoes a layout mistake without ever guessing between two words.

A list must never change once codenames have been made from it: a codename's
keys are derived from the list words it resolves to. The loader checks the
Russian list's digest, so a changed file fails at start, not at a source's login.
"""
