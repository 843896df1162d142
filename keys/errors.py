"""Exceptions of the offline toolkit.

Each carries one line a person can act on; the CLI prints it and exits non-zero.
"""


class KeysError(Exception):
    """Base class: anything the toolkit refuses, for a stated reason."""


class FormatError(KeysError):
    """The input is not in a format we read (bad magic, malformed field, oversized)."""


class UnsupportedVersionError(FormatError):
    """The input names a format version this toolkit does not know."""


class TruncatedError(FormatError):
    """The input ends before its authenticated end marker."""


class TamperedError(KeysError):
    """Authentication failed: the data was modified, reordered or corrupted."""


class DamagedItemError(KeysError):
    """An item's envelope fails to open although the bundle carries exactly the bytes the
    manifest lists for it: the bundle is intact, the item was damaged on the server before export.
    The message is the envelope's own refusal."""


class WrongKeyError(KeysError):
    """None of the given keys can open this data."""


class BadPassphraseError(KeysError):
    """The passphrase does not unlock this secret key file."""


class EmptyPassphraseError(BadPassphraseError):
    """No passphrase was given."""


class BadSignatureError(TamperedError):
    """A signature is missing or does not verify."""


class UnknownSignerError(KeysError):
    """The data is signed by someone who is not a registered journalist."""


class RecordError(FormatError):
    """An envelope opened and authenticated, but what it carries breaks the format's rules (its
    record, a message's tag, length, ``used`` count or padding, the body's declared length), or its
    kind is not the one its bundle says: well-encrypted nonsense, which only a holder of the file key
    (the envelope's writer; anyone holding the recipient's public key can be one) can make. A forgery
    or a writer's bug, never damage: damage fails authentication."""


class UnknownServerError(KeysError):
    """An export bundle is signed by a server key this laptop does not trust."""


class PinnedSourceError(KeysError):
    """A bundle describes a source otherwise than the bundles this laptop decrypted before."""
