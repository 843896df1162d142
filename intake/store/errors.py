"""Exceptions of the store and of the data dir set-up.

Each message is one line a person can act on. Those a person may read are raised with
``intake.told.told``, so that the CLI and the journalist interface can show them in the
reader's language. No message ever quotes a key, a codename or any content.
"""


class StoreError(Exception):
    """Base class: the store refused or failed an operation, for a stated reason."""


class NotInitialisedError(StoreError):
    """The data dir does not exist or was never set up with `intake init`."""


class DamagedInstanceError(NotInitialisedError):
    """The data dir holds an instance that lost its database or its instance secret."""


class SecretFileError(StoreError):
    """A secret file of the data dir is missing, unreadable, malformed or readable by others."""


class MissingDatabaseKeyError(SecretFileError):
    """The database key file is missing, unreadable, malformed or readable by others."""


class WrongDatabaseKeyError(StoreError):
    """The key does not open this database (or the file is not an intake database)."""


class StoreDamagedError(StoreError):
    """A page SQLite needs to open the database is damaged."""


class StoreFullError(StoreError):
    """The disk holding the database is full."""


class StoreBusyError(StoreError):
    """The write lock stayed taken longer than the connection waits (a burst of writers)."""


class SourceGoneError(StoreError):
    """The upload's source was deleted while it arrived: its codename exchanged for a new one in
    another tab, or the source deleted by the newsroom."""


class SourceExistsError(StoreError):
    """A source with this lookup id already exists."""


class JournalistExistsError(StoreError):
    """A journalist with this name or key is already registered."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer version of intake."""
