"""Checks of the create-batch parameters, with the real API's error messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from batchctl.emulator.errors import ApiError, bad_request

_EXPIRES_MIN, _EXPIRES_MAX = 3_600, 2_592_000


def invalid_type(name: str, expected: str, value: Any) -> ApiError:
    """400 ``invalid_type`` for a parameter of the wrong JSON type."""
    return bad_request(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)} instead.",
        param=name,
        code="invalid_type",
    )


def invalid_value(name: str, value: str, allowed: Iterable[str]) -> ApiError:
    """400 ``invalid_value`` for a parameter outside its allowed values."""
    supported = ", ".join(f"'{v}'" for v in allowed)
    return bad_request(
        f"Invalid value: '{value}'. Supported values are: {supported}.",
        param=name,
        code="invalid_value",
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def check_metadata(value: Any) -> dict[str, str] | None:
    """The metadata limits of the real API: ≤16 pairs, keys ≤64 and values ≤512 chars."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > 16:
        raise bad_request(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise bad_request(
                "Invalid 'metadata': string too long. Expected a string with maximum length "
                f"64, but got a string with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(item, str):
            raise invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > 512:
            raise bad_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(item)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(value)


def check_expires_after(value: Any, name: str) -> int | None:
    """Seconds of an ``{anchor: "created_at", seconds}`` object (3,600-2,592,000), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(name, "an object", value)
    if value.get("anchor") != "created_at":
        raise invalid_value(f"{name}.anchor", str(value.get("anchor")), ("created_at",))
    return check_expiry_seconds(value.get("seconds"), f"{name}.seconds")


def check_expiry_seconds(seconds: Any, param: str) -> int:
    """Validate the ``seconds`` of an expiry policy (3,600 to 2,592,000)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise invalid_type(param, "an integer", seconds)
    if not _EXPIRES_MIN <= seconds <= _EXPIRES_MAX:
        raise bad_request(
            f"Invalid '{param}': must be between {_EXPIRES_MIN} and {_EXPIRES_MAX} seconds.",
            param=param,
            code="invalid_value",
        )
    return seconds
