"""Shared caches: a catalog keyed by how labels were computed, and write leases.

- :mod:`.catalog`: ``ROOT/caches/<key>/`` + ``ROOT/index/<key>.json``; ``ls`` / ``find``.
- :mod:`.build`: :func:`prepare_build` decides reuse / resume / extend / new for a build.
- :mod:`.lease`: one writer per cache (also for plain ``--out`` builds), with expiry.
"""

from logitcache.catalog.build import (
    BuildTarget,
    LeasedCacheWriter,
    add_build_options,
    lease_config_from_args,
    open_build_target,
    open_leased_writer,
    prepare_build,
)
from logitcache.catalog.catalog import Catalog, catalog_key
from logitcache.catalog.lease import (
    LEASE_NAME,
    Lease,
    LeaseConfig,
    LeaseRecord,
    acquire_lease,
    read_lease,
)

__all__ = [
    "LEASE_NAME",
    "BuildTarget",
    "Catalog",
    "Lease",
    "LeaseConfig",
    "LeaseRecord",
    "LeasedCacheWriter",
    "acquire_lease",
    "add_build_options",
    "catalog_key",
    "lease_config_from_args",
    "open_build_target",
    "open_leased_writer",
    "prepare_build",
    "read_lease",
]
