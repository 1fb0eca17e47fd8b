"""Settings: defaults, validation (InvalidInput naming field and range), from_env, frozen."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from govc_db import Settings
from govc_db.errors import GovcError, InvalidInput


def test_defaults() -> None:
    s = Settings()
    assert s.pool_size == 5
    assert s.max_overflow == 10
    assert s.pool_timeout == 30.0
    assert s.pool_pre_ping is True
    assert s.prepare_threshold == 5
    assert s.cache_enabled is True
    assert s.compression == "zlib"
    assert s.compression_level == 3
    assert s.metrics_enabled is True
    assert s.rate_limit is None
    assert s.breaker_failures is None
    assert s.replica_urls == ()
    # Two default instances are equal values (a frozen dataclass).
    assert s == Settings()


def test_every_field_is_documented_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        Settings(5)  # type: ignore[call-arg]
    for f in dataclasses.fields(Settings):
        assert f.kw_only, f.name


@pytest.mark.parametrize(
    ("field", "value", "range_text"),
    [
        ("pool_size", 0, ">= 1 and <= 1000"),
        ("pool_size", 1001, ">= 1 and <= 1000"),
        ("max_overflow", -1, ">= 0 and <= 1000"),
        ("pool_timeout", -0.5, ">= 0.0"),
        ("pool_recycle", 0.5, ">= 1.0"),
        ("pool_pre_ping_idle", -0.1, ">= 0.0"),
        ("connect_timeout", 0.0, ">= 0.1"),
        ("prepare_threshold", -1, ">= 0"),
        ("prepared_max", 0, ">= 1"),
        ("cache_max_bytes", -1, ">= 0"),
        ("compression_level", 10, "<= 9"),
        ("compression_level", 0, ">= 1"),
        ("batch_max_rows", 0, ">= 1"),
        ("retry_attempts", 0, ">= 1 and <= 100"),
        ("retry_attempts", 101, ">= 1 and <= 100"),
        ("commit_rebase_attempts", -1, ">= 0"),
        ("rate_limit", 0.0, ">= 0.001"),
        ("rate_burst", 0, ">= 1"),
        ("breaker_failures", 0, ">= 1"),
    ],
)
def test_out_of_range_names_field_and_range(field: str, value: Any, range_text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Settings(**{field: value})
    message = str(info.value)
    assert f"Settings.{field}" in message
    assert range_text in message
    assert repr(value) in message
    assert isinstance(info.value, GovcError)
    assert isinstance(info.value, ValueError)


def test_range_boundaries_are_accepted() -> None:
    s = Settings(
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.0,
        pool_recycle=-1,
        pool_pre_ping_idle=0.0,
        prepare_threshold=0,
        compression_level=9,
        retry_attempts=100,
        commit_rebase_attempts=0,
        rate_limit=0.001,
    )
    assert s.pool_size == 1
    assert s.pool_recycle == -1
    # zstd allows higher levels than zlib.
    assert Settings(compression="zstd", compression_level=19).compression_level == 19
    with pytest.raises(InvalidInput, match=r"Settings\.compression_level"):
        Settings(compression="zstd", compression_level=20)


def test_compression_choices() -> None:
    for method in ("none", "zlib", "zstd"):
        assert Settings(compression=method).compression == method
    with pytest.raises(InvalidInput, match=r"Settings\.compression must be 'none', 'zlib'"):
        Settings(compression="lz4")


def test_optional_fields_accept_none() -> None:
    s = Settings(prepare_threshold=None, rate_limit=None, breaker_failures=None)
    assert s.prepare_threshold is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pool_size", "5"),
        ("pool_size", 2.5),
        ("pool_size", True),
        ("pool_size", None),
        ("pool_timeout", "30"),
        ("pool_timeout", float("nan")),
        ("pool_timeout", float("inf")),
        ("pool_pre_ping", "no"),
        ("pool_pre_ping", 1),
        ("pool_pre_ping_idle", "1"),
        ("write_pipeline", "yes"),
        ("compression", None),
        ("rate_limit", "fast"),
        ("replica_urls", "postgresql+psycopg://u@replica/db"),
        ("replica_urls", (1, 2)),
    ],
)
def test_wrong_types_are_invalid_input(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=rf"Settings\.{field}"):
        Settings(**{field: value})


def test_numbers_are_normalized() -> None:
    s = Settings(pool_timeout=5, replica_urls=["postgresql+psycopg://r1/db"])  # type: ignore[arg-type]
    assert s.pool_timeout == 5.0
    assert isinstance(s.pool_timeout, float)
    assert s.replica_urls == ("postgresql+psycopg://r1/db",)


def test_repr_masks_replica_passwords() -> None:
    s = Settings(replica_urls=("postgresql+psycopg://reader:hunter2secret@replica:5432/db",))
    assert "hunter2secret" not in repr(s)
    assert "reader:***@replica" in repr(s)


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pool_size = 10  # type: ignore[misc]
    assert s.pool_size == 5
    assert hash(s) == hash(Settings())


def test_replace() -> None:
    s = Settings()
    t = s.replace(pool_size=20, compression="zstd")
    assert (t.pool_size, t.compression) == (20, "zstd")
    assert (s.pool_size, s.compression) == (5, "zlib")  # the original is untouched
    with pytest.raises(InvalidInput, match=r"Settings\.pool_size must be >= 1"):
        s.replace(pool_size=0)
    with pytest.raises(InvalidInput, match="no field 'pool_sise'"):
        s.replace(pool_sise=3)


# -- from_env -----------------------------------------------------------------------------


def test_from_env_empty_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    # Unrelated variables and GOVC_DB_URL (read by open(), not a setting) are ignored.
    assert Settings.from_env({"HOME": "/root", "GOVC_DB_URL": "sqlite://"}) == Settings()


def test_from_env_parses_each_kind() -> None:
    s = Settings.from_env(
        {
            "GOVC_DB_POOL_SIZE": " 12 ",
            "GOVC_DB_POOL_TIMEOUT": "2.5",
            "GOVC_DB_CONNECT_TIMEOUT": "3",
            "GOVC_DB_POOL_PRE_PING": "off",
            "GOVC_DB_CACHE_ENABLED": "No",
            "GOVC_DB_METRICS_ENABLED": "0",
            "GOVC_DB_PREPARE_THRESHOLD": "none",
            "GOVC_DB_RATE_LIMIT": "50.5",
            "GOVC_DB_BREAKER_FAILURES": "3",
            "GOVC_DB_COMPRESSION": "zstd",
            "GOVC_DB_REPLICA_URLS": "postgresql+psycopg://r1/db, postgresql+psycopg://r2/db,",
        }
    )
    assert s.pool_size == 12
    assert s.pool_timeout == 2.5
    assert s.connect_timeout == 3.0
    assert s.pool_pre_ping is False
    assert s.cache_enabled is False
    assert s.metrics_enabled is False
    assert s.prepare_threshold is None
    assert s.rate_limit == 50.5
    assert s.breaker_failures == 3
    assert s.compression == "zstd"
    assert s.replica_urls == ("postgresql+psycopg://r1/db", "postgresql+psycopg://r2/db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_from_env_bools(text: str, expected: bool) -> None:
    assert Settings.from_env({"GOVC_DB_CACHE_ENABLED": text}).cache_enabled is expected


@pytest.mark.parametrize("text", ["none", "NULL", ""])
def test_from_env_none_for_optional_fields(text: str) -> None:
    s = Settings.from_env({"GOVC_DB_RATE_LIMIT": text, "GOVC_DB_PREPARE_THRESHOLD": text})
    assert s.rate_limit is None
    assert s.prepare_threshold is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GOVC_DB_POOL_SIZE", "ten"),
        ("GOVC_DB_POOL_SIZE", "2.5"),
        ("GOVC_DB_POOL_SIZE", ""),
        ("GOVC_DB_POOL_SIZE", "none"),  # not an optional field
        ("GOVC_DB_POOL_TIMEOUT", "soon"),
        ("GOVC_DB_CACHE_ENABLED", "maybe"),
        ("GOVC_DB_RATE_LIMIT", "fast"),
    ],
)
def test_from_env_invalid_values(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("GOVC_DB_POOL_SIZE", "0", "pool_size"),
        ("GOVC_DB_POOL_TIMEOUT", "nan", "pool_timeout"),
        ("GOVC_DB_COMPRESSION", "brotli", "compression"),
    ],
)
def test_from_env_values_are_range_checked(name: str, value: str, field: str) -> None:
    with pytest.raises(InvalidInput, match=rf"Settings\.{field}"):
        Settings.from_env({name: value})


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVC_DB_POOL_SIZE", "7")
    monkeypatch.setenv("GOVC_DB_COMPRESSION", "none")
    s = Settings.from_env()
    assert (s.pool_size, s.compression) == (7, "none")
