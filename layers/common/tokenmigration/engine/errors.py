"""Domain errors: the API layer maps them to 404 and 409."""


class MigrationError(Exception):
    code = "migration_error"


class UnknownUser(MigrationError):
    code = "unknown_user"


class AlreadyMigrated(MigrationError):
    code = "already_migrated"


class HoldsTokens(MigrationError):
    code = "has_tokens"


class NotMigrated(MigrationError):
    code = "not_migrated"


class UserBusy(MigrationError):
    code = "user_locked"


class NoMigrationToken(MigrationError):
    """A migrated user whose migration token is gone (revoked, pruned) or expired: nothing to deliver."""

    code = "no_migration_token"


class SessionIndexMissing(MigrationError):
    """A chunk ran without its run's complete session index; migrating it would drop sessions."""

    code = "session_index_missing"


class SessionStoreChanged(MigrationError):
    """The session store's nodes changed while a plan scanned it slice by slice (failover, resharding)."""

    code = "session_store_changed"


class IndexWontFit(MigrationError):
    """Redis has no room under its maxmemory for the run's session index: filling it would make Redis evict
    keys, Express sessions among them."""

    code = "index_wont_fit"
