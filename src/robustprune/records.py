"""Result records: dataclasses whose plain dict (for JSON files and MLflow) is :func:`dataclasses.asdict`."""

from __future__ import annotations

from dataclasses import asdict


class Record:
    """Base of a result dataclass: :meth:`to_dict` gives its fields as a plain dict (nested ones too)."""

    __slots__ = ()

    def to_dict(self) -> dict:
        """Plain dict (JSON / MLflow)."""
        return asdict(self)  # type: ignore[call-overload] - every subclass is a dataclass
