"""The one exception hierarchy of tidelog.

Callers catch these, never a driver's exceptions (``lmdb.Error``,
``sqlite3.Error``): every backend translates what its driver raises into one of
the classes below, keeping the driver's exception as ``__cause__``.
"""

from __future__ import annotations


class TidelogError(Exception):
    """Base class of every error tidelog raises on purpose."""


class InvalidTopicError(TidelogError, ValueError):
    """A topic name or topic filter breaks the MQTT rules."""


class InvalidPositionError(TidelogError, ValueError):
    """A start/end position string (``earliest``, ``offset:N``, ``time:T``) is malformed."""


class StorageError(TidelogError):
    """Base class of errors from the storage layer."""


class InvalidStorageURLError(StorageError, ValueError):
    """The storage URL names an unknown scheme or an unusable path or option."""


class LogClosedError(StorageError):
    """The log was used after ``close()`` (or while it is closing)."""


class LogLockedError(StorageError):
    """Another process holds the data directory open."""


class OffsetOutOfRangeError(StorageError, InvalidPositionError):
    """An offset past the end of the log: a read, a start position, a cursor commit.

    It is an :class:`InvalidPositionError` too, so every API that refuses a bad
    start position refuses a past-the-end offset the same way (docs/engine.md,
    "Positions")."""


class RecordTooLargeError(StorageError, ValueError):
    """A record is larger than the log's ``max_record_bytes``; the batch was refused whole."""


class CorruptLogError(StorageError):
    """Stored data cannot be read back: truncated files, bad records, broken indexes."""


class StorageUnavailableError(StorageError):
    """The storage service (Kafka) cannot be reached or did not acknowledge in time.

    Nothing was acknowledged to the caller; a batch may still have been stored in
    part (a retry may duplicate it). The broker refuses publishes with this error
    until the service answers again, and recovers by itself."""


class BatchPartlyQueuedError(StorageUnavailableError):
    """The storage client took only part of a batch (Kafka's producer queue filled up
    mid-batch): the records it took may still be stored, the others are not.

    The whole batch counts as refused (and maybe stored). Unlike other refusals it
    must not be retried in parts: the group-commit writer would send the records
    already queued a second time (docs/storage.md)."""


class StorageFullError(StorageError):
    """The storage medium is out of space; nothing of the failed batch was stored."""


class CursorError(TidelogError):
    """Base class of errors about named durable cursors."""


class CursorNotFoundError(CursorError, LookupError):
    """No cursor has that name."""


class CursorExistsError(CursorError, ValueError):
    """A cursor of that name exists with a different filter."""


class InvalidConsumerOptionsError(CursorError, ValueError):
    """A cursor's consumer options (ack policy, ack wait, backoff, ...) are not valid."""


class AckPolicyError(CursorError, ValueError):
    """A settlement (ack, nak, progress) the cursor's ack policy does not take."""


class InvalidCursorNameError(CursorError, ValueError):
    """A cursor name that is empty, holds control characters, or does not fit storage
    together with its owner's name (HTTP 400)."""


class LinkError(TidelogError, ValueError):
    """A mesh link definition that cannot be used (REST ``PUT /v1/links/{name}``)."""


class LinkNotFoundError(LinkError, LookupError):
    """No link created at run time has that name."""


class LinkConflictError(LinkError):
    """The link is defined in the configuration file (REST cannot change it)."""
