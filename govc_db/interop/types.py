"""Reports returned by import and export."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ExportReport", "ImportReport"]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``Store.import_git`` did: objects stored, commits indexed, refs moved."""

    repository: str
    objects: int
    commits_indexed: int
    refs_updated: dict[str, str] = field(default_factory=dict)
    transactions: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What ``Repository.export_git`` wrote: a bare repository with one pack."""

    path: str
    objects: int
    refs: dict[str, str] = field(default_factory=dict)
    pack_bytes: int = 0
