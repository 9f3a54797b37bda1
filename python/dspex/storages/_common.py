"""What the storages opened in the engine share."""

from __future__ import annotations

from typing import Any, Dict, List


def summaries(native: Any) -> List[Dict[str, Any]]:
    """Study summaries of an engine storage: study_id, study_name, directions, n_trials,
    user_attrs, system_attrs, datetime_start (Unix seconds or None)."""
    keys = ("study_id", "study_name", "directions", "n_trials", "user_attrs", "system_attrs", "datetime_start")
    return [dict(zip(keys, row)) for row in native.summaries()]
