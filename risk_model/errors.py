"""The project's exceptions: one root, three categories chosen by what a caller does about them.

- :class:`BadInputError`: something the user gave is wrong (a parameter file, an input raster,
  a region id, a grid, a store holding something else). Retrying cannot help: fail at once
  with the message, which names what is wrong and what to do.
- :class:`StoreUnavailableError`: the repository or a service cannot be reached or is busy right
  now. Retry later.
- :class:`CommitConflictError`: other writers kept winning the commit. Rebase and retry.

Every specific error of the project derives from exactly one category (some also from the
builtin they used to be, ``ValueError`` or ``LookupError``, so callers that caught those keep
working), so a caller catches the category instead of a tuple of classes.
"""


class RiskError(Exception):
    """Root of every error this project raises on purpose."""


class BadInputError(RiskError):
    """Wrong input from the user: fail without retry."""


class StoreUnavailableError(RiskError):
    """The store or a service is unreachable or busy: retry later."""


class CommitConflictError(StoreUnavailableError):
    """Other writers kept winning: the commit could not be rebased within the allowed tries.

    A kind of "retry later": running the region again rebases over the winners.
    """
