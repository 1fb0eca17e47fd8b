"""The validation rules of DESIGN.md: paths, ref names, repository names, signatures."""

from __future__ import annotations

import pytest
from _git import GitRepo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.objects import (
    Signature,
    check_path,
    check_path_set,
    check_ref_name,
    check_repository_name,
    check_short_ref_name,
    format_offset,
)
from govc_db.objects.validate import MAX_COMPONENT_BYTES, MAX_PATH_BYTES


def test_invalid_input_is_a_govc_error_and_a_value_error() -> None:
    assert issubclass(InvalidInput, GovcError)
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(NotFound, LookupError)
    with pytest.raises(ValueError) as info:
        check_path("")
    assert isinstance(info.value, GovcError)
    assert isinstance(info.value, InvalidInput)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c.txt",
        "a.txt",
        "a-b",
        ".gitignore",
        ".github/workflows/ci.yml",
        "x/.gitkeep",
        "git",
        "a.git",
        ".git2",
        "...",
        ".hidden/..x",
        "with space/é",
        "ünïcødé/日本語.txt",
        "a" * MAX_COMPONENT_BYTES,
        "é" * (MAX_COMPONENT_BYTES // 2),  # 254 bytes
        "/".join(["a" * 255] * 16),  # 4095 bytes
    ],
)
def test_good_paths(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "empty"),
        ("/", "relative"),
        ("/a", "relative"),
        ("//a", "relative"),
        ("a/", "end with '/'"),
        ("a/b/", "end with '/'"),
        ("a//b", "component"),
        (".", "component"),
        ("..", "component"),
        ("a/./b", "component"),
        ("a/../b", "component"),
        ("../a", "component"),
        ("a/..", "component"),
        ("a/.", "component"),
        (".git", ".git"),
        (".GIT", ".git"),
        (".Git/config", ".git"),
        ("a/.gIt", ".git"),
        ("sub/.git/HEAD", ".git"),
        ("a\0b", "control"),
        ("\0", "control"),
        ("a\nb", "control"),
        ("a\rb", "control"),
        ("a\tb", "control"),
        ("a\x1fb", "control"),
        ("a\x7fb", "control"),
        ("a/b\x01", "control"),
        ("a" * (MAX_COMPONENT_BYTES + 1), "component longer"),
        ("x/" + "é" * 128, "component longer"),  # 256 bytes in 128 characters
        ("a/" * 2048 + "a", "longer than 4096"),  # 4097 bytes
        ("/".join(["é" * 120] * 18), "longer than 4096"),
        ("a/\ud800", "Unicode"),
    ],
)
def test_bad_paths(path: str, rule: str) -> None:
    with pytest.raises(InvalidInput, match=rule):
        check_path(path)


def test_path_length_limits_count_bytes_not_characters() -> None:
    exact = "a/" * 2047 + "ab"
    assert len(exact.encode()) == MAX_PATH_BYTES
    assert check_path(exact) == exact
    with pytest.raises(InvalidInput, match="longer than 4096"):
        check_path(exact[:-1] + "é")  # 4097 bytes in 4096 characters
    check_path("é" * 127 + "a")  # 255 bytes
    with pytest.raises(InvalidInput):
        check_path("é" * 127 + "ab")  # 256 bytes


@pytest.mark.parametrize("value", [None, b"a", 1, ["a"]])
def test_path_must_be_a_str(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_path(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "paths",
    [
        [],
        ["a"],
        ["a", "b"],
        ["a", "a-b", "a.b", "a0", "ab", "b/a"],
        ["a-b/c", "a/c", "a.b/c", "a0/c"],
        ["a/b", "a/c", "a/d/e"],
        ["x", "x"],  # a repeated path is one file, not a clash
        ["dir/file", "dir2/file", "dir-x"],
    ],
)
def test_path_sets_without_clash(paths: list[str]) -> None:
    check_path_set(paths)
    check_path_set(reversed(paths))
    check_path_set(iter(paths))


@pytest.mark.parametrize(
    ("paths", "clash"),
    [
        (["a", "a/b"], "a"),
        (["a/b", "a"], "a"),
        # The sort trap: "a" < "a-b" < "a.b" < "a/b", so "a/b" is not next to "a".
        (["a", "a-b", "a/b"], "a"),
        (["a", "a-b", "a.b", "a!", "a/b"], "a"),
        (["a/b/c", "a"], "a"),
        (["a/b/c", "a/b"], "a/b"),
        (["x/y", "x/y-z", "x/y.z", "x/y/z"], "x/y"),
        (["q", "a", "a0", "a/b", "z"], "a"),
    ],
)
def test_path_sets_with_a_file_that_is_also_a_directory(paths: list[str], clash: str) -> None:
    for order in (paths, list(reversed(paths)), sorted(paths)):
        with pytest.raises(InvalidInput, match="both a file and a directory") as info:
            check_path_set(order)
        assert repr(clash) in str(info.value)


_components = st.text(alphabet="ab-./0", min_size=1, max_size=3)


@settings(database=None, deadline=None)
@given(st.lists(st.lists(_components, min_size=1, max_size=3).map("/".join), max_size=12))
def test_path_set_agrees_with_a_brute_force_check(paths: list[str]) -> None:
    files = set(paths)
    clash = any(p.startswith(f + "/") for p in files for f in files)
    if clash:
        with pytest.raises(InvalidInput):
            check_path_set(paths)
    else:
        check_path_set(paths)


# --------------------------------------------------------------------------- ref names

GOOD_REFS = [
    "refs/heads/main",
    "refs/heads/a/b",
    "refs/heads/feature/x-y_z",
    "refs/tags/v1.0",
    "refs/heads/a.b",
    "refs/heads/a./b",  # only the whole name must not end with '.'
    "refs/heads/a-",
    "refs/heads/@",
    "refs/heads/a@b",
    "refs/heads/a}b{",
    "refs/heads/ünïcødé",
    "refs/heads/日本語",
    "refs/heads/a.lockx",
    "refs/heads/a#b",
    "refs/heads/a!b",
    "main",
    "HEAD",
    "a",
    "@@",
    "a.b.c",
]

BAD_REFS = [
    "",
    "@",
    "/",
    "a/",
    "a.",
    "refs/heads/",
    "/refs/heads/a",
    "refs//heads/a",
    "refs/heads/a..b",
    "refs/heads/..",
    "refs/heads/.hidden",
    "refs/heads/a/.b",
    ".a",
    "refs/heads/a.lock",
    "refs/heads/a.lock/b",
    "refs/heads/.lock",
    "refs/heads/@{x}",
    "refs/heads/a@{",
    "refs/heads/ x",
    "refs/heads/x ",
    "refs/heads/a b",
    "refs/heads/~",
    "refs/heads/a^b",
    "refs/heads/a:b",
    "refs/heads/a?b",
    "refs/heads/a*b",
    "refs/heads/a[b",
    "refs/heads/a\\b",
    "refs/heads/a\tb",
    "refs/heads/a\nb",
    "refs/heads/a\x01b",
    "refs/heads/a\x1fb",
    "refs/heads/a\x7fb",
    "refs/heads/a.",
    "refs/heads/a/",
]


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return GitRepo(tmp_path_factory.mktemp("git-refs"))


def git_accepts_ref(git: GitRepo, name: str) -> bool:
    # Without --allow-onelevel git also demands a '/'; DESIGN.md does not.
    proc = git.run_raw("check-ref-format", "--allow-onelevel", name)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


@pytest.mark.parametrize("name", GOOD_REFS)
def test_good_ref_names_agree_with_git(git: GitRepo, name: str) -> None:
    assert git_accepts_ref(git, name)
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", BAD_REFS)
def test_bad_ref_names_agree_with_git(git: GitRepo, name: str) -> None:
    assert not git_accepts_ref(git, name)
    with pytest.raises(InvalidInput):
        check_ref_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "-x",  # DESIGN.md: no leading '-' (git check-ref-format would read it as an option)
        "-",
        "refs/heads/a\0b",  # NUL cannot even be passed to git
        "\0",
        "refs/heads/\ud800",  # not encodable: must be InvalidInput, not UnicodeEncodeError
        "refs/heads/" + "a" * 1014,  # over 1024 bytes
    ],
)
def test_ref_names_refused_beyond_what_git_checks(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_ref_name(name)


def test_ref_name_length_limit() -> None:
    check_ref_name("refs/heads/" + "a" * 1013)  # 1024 bytes


def test_leading_dash_is_refused_by_git_for_branches(git: GitRepo) -> None:
    assert git.run_raw("check-ref-format", "--branch", "-x").returncode != 0
    assert git.run_raw("check-ref-format", "--branch", "x").returncode == 0


@pytest.mark.parametrize("value", [None, b"refs/heads/a", 1])
def test_ref_name_must_be_a_str(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_ref_name(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        check_short_ref_name(value)  # type: ignore[arg-type]


_ref_alphabet = st.sampled_from(
    [*"ab/.-@{}~^:?*[\\ ", ".lock", "@{", "/.", "..", "\x01", "\x7f", "é"]
)


@settings(
    database=None,
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(_ref_alphabet, min_size=1, max_size=8).map("".join))
def test_random_ref_names_agree_with_git(git: GitRepo, name: str) -> None:
    ours = True
    try:
        check_ref_name(name)
    except InvalidInput:
        ours = False
    if name.startswith("-"):
        assert not ours
    else:
        assert ours == git_accepts_ref(git, name)


@pytest.mark.parametrize("name", ["main", "feature/x", "v1.0", "release/2024-01", "ünï", "head"])
def test_good_short_ref_names(name: str) -> None:
    assert check_short_ref_name(name) == name
    assert check_short_ref_name(name, "tag") == name
    assert check_ref_name("refs/heads/" + name) == "refs/heads/" + name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("refs/heads/main", "give the short name"),
        ("refs/tags/v1", "give the short name"),
        ("refs/x", "give the short name"),
        ("HEAD", "'HEAD' is reserved"),
        ("", ": empty"),
        ("@", "lone '@'"),
        ("-x", "must not start with"),
        ("a..b", "'..' is not allowed"),
        ("a.lock", "must not end with '.lock'"),
        ("a/", "must not end with"),
        ("a b", "character ' '"),
        ("x@{1}", "'@{' is not allowed"),
    ],
)
def test_bad_short_ref_names(name: str, rule: str) -> None:
    with pytest.raises(InvalidInput, match="invalid tag name") as info:
        check_short_ref_name(name, "tag")
    assert rule in str(info.value)
    with pytest.raises(InvalidInput, match="invalid branch name"):
        check_short_ref_name(name)


# --------------------------------------------------------------------------- repository names


@pytest.mark.parametrize(
    "name",
    ["a", "A", "0", "repo", "my-repo_2.0", "a.", "a..b", "_", "-", "x" * 100, "ABC-def_09.git"],
)
def test_good_repository_names(name: str) -> None:
    assert check_repository_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "x" * 101,
        "a/b",
        "a b",
        "a\\b",
        "a:b",
        "é",
        "a\n",
        "a\0",
        "\u0661",  # a non-ASCII digit
        "ǅ",
        None,
        b"repo",
        1,
    ],
)
def test_bad_repository_names(name: object) -> None:
    with pytest.raises(InvalidInput, match="repository name"):
        check_repository_name(name)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- signatures


def test_signature_examples() -> None:
    sig = Signature("A U Thor", "a@example.com", 1_700_000_000, -330)
    assert sig.serialize() == b"A U Thor <a@example.com> 1700000000 -0530"
    assert Signature("A", "", 0).serialize() == b"A <> 0 +0000"
    assert Signature("Ünï", "ü@x", 1, 120).serialize() == "Ünï <ü@x> 1 +0200".encode()
    assert [format_offset(m) for m in (0, 120, -330, 899, -899, 45, -1)] == [
        "+0000",
        "+0200",
        "-0530",
        "+1459",
        "-1459",
        "+0045",
        "-0001",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offset": 900},
        {"offset": -900},
        {"offset": 7200},  # seconds, not minutes
        {"offset": True},
        {"offset": 1.5},
        {"offset": "+0200"},
        {"time": -1},
        {"time": 2**63},
        {"time": True},
        {"time": False},
        {"time": 1.0},
        {"time": "1700000000"},
        {"name": ""},
        {"name": "A <x"},
        {"name": "A>"},
        {"name": "A\nB"},
        {"name": "A\0"},
        {"name": " A"},
        {"name": "A "},
        {"name": "A\t"},
        {"name": b"A"},
        {"name": "\ud800"},  # could not be written
        {"name": "\udcc3\udca9"},  # would be written as "é" and read back as "é"
        {"email": "a<b"},
        {"email": "a>b"},
        {"email": "a\n"},
        {"email": " a"},
        {"email": None},
    ],
)
def test_signature_rules(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"name": "A", "email": "a@x", "time": 1, "offset": 0}
    fields.update(kwargs)
    with pytest.raises(InvalidInput):
        Signature(**fields)  # type: ignore[arg-type]


def test_signature_accepts_edges() -> None:
    assert Signature("A", "a", 2**63 - 1, 899).time == 2**63 - 1
    assert Signature("A", "a", 0, -899).offset == -899
    assert Signature("J\udcf6rg", "a", 0).serialize() == b"J\xf6rg <a> 0 +0000"


def test_signature_is_immutable() -> None:
    sig = Signature("A", "a", 1)
    with pytest.raises(AttributeError):
        sig.name = "B"  # type: ignore[misc]
    assert hash(sig) == hash(Signature("A", "a", 1))
