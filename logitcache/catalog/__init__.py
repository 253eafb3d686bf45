"""Shared caches: a catalog keyed by how labels were computed.

- :mod:`.catalog`: ``ROOT/caches/<key>/`` + ``ROOT/index/<key>.json``; ``ls`` / ``find``.
- :mod:`.target`: :func:`prepare_build` decides reuse / resume / extend / new for a build.
- :mod:`.match`: which entries hold a given corpus (its fingerprint, computed as a build would).

The catalog is a leaf: it builds on the format (manifest, write lease, write target) and
storage, and nothing below it imports it. The write lease itself is part of the commit
protocol (:mod:`logitcache.format.lease`).
"""

from logitcache.catalog.catalog import Catalog, catalog_key
from logitcache.catalog.target import CatalogTarget, prepare_build

__all__ = ["Catalog", "CatalogTarget", "catalog_key", "prepare_build"]
