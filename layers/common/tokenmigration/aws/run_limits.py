"""The sizes a run accepts, apart from run_control so the API's models import no AWS client code."""

DEFAULT_CHUNK_SIZE = 2000
DEFAULT_MAX_CONCURRENCY = 10
MAX_CHUNK_SIZE = 10_000
MAX_CONCURRENCY = 1_000
