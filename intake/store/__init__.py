"""The SQLCipher store: schema, migrations, short transactions. The only code that knows SQL."""

from intake.store.errors import (
    JournalistExistsError,
    MissingDatabaseKeyError,
    NotInitialisedError,
    SchemaTooNewError,
    SecretFileError,
    SourceExistsError,
    StoreError,
    StoreFullError,
    WrongDatabaseKeyError,
)
from intake.store.store import (
    Journalist,
    Recipient,
    Source,
    Store,
    StoredReply,
    StoredSubmission,
    today,
)
from intake.store.submission_writer import SubmissionWriter

__all__ = [
    "Journalist",
    "JournalistExistsError",
    "MissingDatabaseKeyError",
    "NotInitialisedError",
    "Recipient",
    "SchemaTooNewError",
    "SecretFileError",
    "Source",
    "SourceExistsError",
    "Store",
    "StoreError",
    "StoreFullError",
    "StoredReply",
    "StoredSubmission",
    "SubmissionWriter",
    "WrongDatabaseKeyError",
    "today",
]
