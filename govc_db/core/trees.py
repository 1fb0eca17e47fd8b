"""Tree reading and building over the ObjectStore port (pure logic, no SQL).

``build_tree`` rewrites only the trees along the changed paths, so a commit's
cost grows with the size of its change, not with the size of the repository.
Reads that fan out (``walk_files``, ``build_tree``'s loading of the changed
directories) fetch one depth at a time with ``get_many``: one query per level,
not one per tree.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import attrgetter, countOf
from typing import Final, Protocol

from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.objects import MODE_DIR, Blob, ObjectId, Tree, TreeItem, hash_object, tree_sort_key
from govc_db.objects.lenient import lenient_tree
from govc_db.store.ports import ObjectStore, RawObject
from govc_db.types import File

__all__ = [
    "EMPTY_TREE",
    "TreeMemo",
    "build_tree",
    "build_tree_with_paths",
    "decode_path",
    "encode_path",
    "find_entry",
    "iter_files",
    "list_tree",
    "load_tree",
    "load_trees",
    "merge_items",
    "walk_files",
]

_NAME: Final = attrgetter("name")
_MODE: Final = attrgetter("mode")

#: The id of the tree with no entries (``git hash-object -t tree /dev/null``).
EMPTY_TREE: Final = hash_object(b"tree", b"")


def encode_path(path: str) -> bytes:
    """A path as tree-entry bytes (UTF-8; surrogate escapes give back undecodable bytes)."""
    return path.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    """Tree-entry bytes as a str; bytes that are not UTF-8 survive as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def _parse_tree(oid: ObjectId, raw: RawObject, keep_bytes: bool = False) -> Tree:
    # A tree the store holds but cannot use is corruption, not bad caller input: plain
    # GovcError, never InvalidInput/NotFound that a caller could mistake for its own fault.
    if raw.type != b"tree":
        raise GovcError(
            f"object {oid.hex()} is a {raw.type.decode('ascii', 'replace')}, not a tree"
        )
    try:
        tree = lenient_tree(raw.data)
    except InvalidInput as exc:
        raise GovcError(f"tree {oid.hex()} is corrupt: {exc}") from exc
    if keep_bytes and tree.raw is None:
        # Parsed strictly (canonical modes, git order): the bytes are its serialization.
        return Tree.presorted(tree.items, bytes(raw.data))
    return tree


def load_tree(objects: ObjectStore, oid: ObjectId, *, keep_bytes: bool = False) -> Tree:
    """Read and parse tree ``oid``; ``GovcError`` if it is missing, not a tree, or corrupt.
    ``keep_bytes``: see :func:`load_trees`."""
    return load_trees(objects, [oid], keep_bytes=keep_bytes)[oid]


class TreeMemo(Protocol):
    """Parsed trees by id. An ObjectStore may offer one as its ``tree_memo`` attribute
    (the query-result cache does): parsing costs more than a cached read, and a tree id
    always names the same tree.
    """

    def get_trees(self, oids: Sequence[ObjectId]) -> dict[ObjectId, Tree]:
        """The remembered trees among ``oids``."""
        ...

    def put_trees(self, trees: Mapping[ObjectId, Tree]) -> None:
        """Remember parsed trees."""
        ...


def load_trees(
    objects: ObjectStore, oids: Iterable[ObjectId], *, keep_bytes: bool = False
) -> dict[ObjectId, Tree]:
    """Read and parse several trees with one ``get_many``; ``GovcError`` as ``load_tree``.

    ``keep_bytes``: a canonical tree read from the store keeps its bytes (``Tree.data``),
    for trees about to be edited (a commit splices them); a remembered tree is returned
    as it was remembered."""
    wanted = list(dict.fromkeys(oids))
    out: dict[ObjectId, Tree] = {}
    fetch = [o for o in wanted if o != EMPTY_TREE]
    # The empty tree is implicitly known (as in git): it need not be stored to be read.
    if len(fetch) != len(wanted):
        out[EMPTY_TREE] = Tree()
    memo: TreeMemo | None = getattr(objects, "tree_memo", None)
    if memo is not None and fetch:
        out.update(memo.get_trees(fetch))
        fetch = [o for o in fetch if o not in out]
    if fetch:
        found = objects.get_many(fetch)
        parsed: dict[ObjectId, Tree] = {}
        for oid in fetch:
            raw = found.get(oid)
            if raw is None:
                raise GovcError(f"tree {oid.hex()} is missing from the store")
            parsed[oid] = _parse_tree(oid, raw, keep_bytes)
        out.update(parsed)
        if memo is not None:
            memo.put_trees(parsed)
    return out


def find_entry(objects: ObjectStore, root: ObjectId, path: str) -> TreeItem | None:
    """The entry at ``path`` (file, symlink, gitlink or directory) below ``root``, or None
    when it does not exist (including when a leading component is a file).
    """
    parts = encode_path(path).split(b"/")
    tree = load_tree(objects, root)
    for i, name in enumerate(parts):
        item = tree.get(name)
        if item is None:
            return None
        if i == len(parts) - 1:
            return item
        if item.mode != MODE_DIR:
            return None
        tree = load_tree(objects, item.oid)
    return None  # unreachable: split() gives at least one part


def _dir_at(objects: ObjectStore, root: ObjectId, path: str) -> ObjectId:
    if path == "":
        return root
    item = find_entry(objects, root, path)
    if item is None:
        raise NotFound(f"path {path!r} not found")
    if item.mode != MODE_DIR:
        raise NotFound(f"path {path!r} is not a directory")
    return item.oid


def list_tree(objects: ObjectStore, root: ObjectId, path: str = "") -> list[tuple[str, TreeItem]]:
    """The direct entries ``(full path, item)`` of the directory at ``path`` ("" = root),
    in git order; ``NotFound`` if ``path`` does not exist or is not a directory.
    """
    tree = load_tree(objects, _dir_at(objects, root, path))
    prefix = path + "/" if path else ""
    return [(prefix + decode_path(item.name), item) for item in tree.items]


def walk_files(
    objects: ObjectStore, root: ObjectId, path: str = ""
) -> Iterator[tuple[str, TreeItem]]:
    """Every non-directory entry below ``path`` recursively, as ``(full path, item)``,
    sorted by path bytes (which is git's recursive order). Subtrees are fetched level by
    level with ``get_many`` (one query per depth, not per tree). ``path`` naming a file
    yields just that file; a missing ``path`` raises ``NotFound``.
    """
    # Resolve eagerly so a missing path raises at the call, not at the first next().
    start = root
    if path:
        item = find_entry(objects, root, path)
        if item is None:
            raise NotFound(f"path {path!r} not found")
        if item.mode != MODE_DIR:
            return iter([(path, item)])
        start = item.oid
    return iter(_walk(objects, start, encode_path(path + "/") if path else b""))


def iter_files(
    objects: ObjectStore, root: ObjectId, path: str = ""
) -> Iterator[tuple[str, TreeItem]]:
    """What :func:`walk_files` yields, in the same order, streamed: depth first, which in
    git's tree order (a directory sorts as ``name/``) is exactly full-path byte order. A
    directory's subtrees are read together with one ``get_many`` when it is entered, so
    memory holds the directories on the current path and their subtrees, never the whole
    listing. ``NotFound`` for a missing ``path`` is raised at the call."""
    start = root
    if path:
        item = find_entry(objects, root, path)
        if item is None:
            raise NotFound(f"path {path!r} not found")
        if item.mode != MODE_DIR:
            return iter([(path, item)])
        start = item.oid
    return _depth_first(objects, start, encode_path(path + "/") if path else b"")


def _depth_first(
    objects: ObjectStore, root: ObjectId, prefix: bytes
) -> Iterator[tuple[str, TreeItem]]:
    def enter(tree: Tree) -> dict[ObjectId, Tree]:
        return load_trees(objects, [i.oid for i in tree.items if i.mode == MODE_DIR])

    top = load_tree(objects, root)
    stack = [(prefix, iter(top.items), enter(top))]
    while stack:
        base, items, subtrees = stack[-1]
        for item in items:
            full = base + item.name
            if item.mode == MODE_DIR:
                sub = subtrees.pop(item.oid, None)
                if sub is None:  # the same subtree twice in one directory
                    sub = load_tree(objects, item.oid)
                stack.append((full + b"/", iter(sub.items), enter(sub)))
                break
            yield decode_path(full), item
        else:
            stack.pop()


def _walk(objects: ObjectStore, root: ObjectId, prefix: bytes) -> list[tuple[str, TreeItem]]:
    files: list[tuple[bytes, TreeItem]] = []
    frontier: list[tuple[bytes, ObjectId]] = [(prefix, root)]
    while frontier:
        trees = load_trees(objects, (oid for _, oid in frontier))
        below: list[tuple[bytes, ObjectId]] = []
        for base, oid in frontier:
            for item in trees[oid].items:
                full = base + item.name
                if item.mode == MODE_DIR:
                    below.append((full + b"/", item.oid))
                else:
                    files.append((full, item))
        frontier = below
    # Breadth-first collection loses git's order; full path bytes restore it exactly,
    # because git compares a directory name as "name/", the same byte a path carries.
    files.sort(key=lambda f: f[0])
    return [(decode_path(p), item) for p, item in files]


# -- building ---------------------------------------------------------------------------


def _lookup(items: tuple[TreeItem, ...], name: bytes) -> TreeItem | None:
    """The entry called ``name`` among ``items`` (git order): a binary search for each of
    the two places it can sort (as a file ``name``, as a directory ``name/``)."""
    n = len(items)
    for key in (name, name + b"/"):
        pos = bisect_left(items, key, key=_item_key)
        if pos < n and items[pos].name == name:
            return items[pos]
    return None


class _Dir:
    """A directory being edited: its stored entries, and the names edited since.

    ``base`` is the stored tree's entries (git order, never copied into a dict: a
    lookup is a binary search), ``orig`` the stored entry (or None) of every name whose
    value was ever replaced or deleted, and ``changed`` those names' current values
    (unloaded TreeItems or loaded ``_Dir``s; absent when deleted). Serializing merges
    just those names into ``base`` and the changed paths come from them, so all of it
    costs what the edit touched rather than the size of the directory.
    """

    __slots__ = ("base", "changed", "data", "dirty", "new_oid", "oid", "orig")

    def __init__(self, oid: ObjectId | None, tree: Tree) -> None:
        self.oid = oid  # the stored tree this was loaded from; None when new
        self.base = tree.items if oid is not None else ()
        # Canonical bytes only: a lenient tree's ``raw`` is rewritten canonically.
        self.data = (tree.data if tree.raw is None else None) if oid is not None else b""
        self.orig: dict[bytes, TreeItem | None] = {}
        self.changed: dict[bytes, TreeItem | _Dir] = {}
        self.dirty = oid is None
        self.new_oid: ObjectId | None = None  # set by _serialize

    def get(self, name: bytes) -> TreeItem | _Dir | None:
        """The current entry ``name``, or None."""
        if name in self.orig:
            return self.changed.get(name)
        return _lookup(self.base, name)

    def set(self, name: bytes, value: TreeItem | _Dir) -> None:
        """Replace (or add) entry ``name``, remembering the stored one."""
        self._remember(name)
        self.changed[name] = value

    def delete(self, name: bytes) -> None:
        """Remove entry ``name`` (which exists), remembering the stored one."""
        self._remember(name)
        del self.changed[name]

    def _remember(self, name: bytes) -> None:
        if name not in self.orig:
            found = _lookup(self.base, name)
            self.orig[name] = found
            if found is not None:
                self.changed[name] = found

    def is_empty(self) -> bool:
        """Empty once pruned: no entry except directories that are empty too.

        Iterative (an explicit stack, not recursion): a valid path may be thousands of
        levels deep, far beyond Python's recursion limit.
        """
        stack: list[_Dir] = [self]
        while stack:
            d = stack.pop()
            # A stored entry no edit touched is a file or an unloaded (non-empty) tree.
            if len(d.base) > sum(1 for o in d.orig.values() if o is not None):
                return False
            for v in d.changed.values():
                if not isinstance(v, _Dir):
                    return False
                stack.append(v)
        return True


_Trie = dict[bytes, "_Trie"]


def _prefetch(objects: ObjectStore, root: _Dir, dir_paths: Iterable[tuple[bytes, ...]]) -> None:
    """Load every existing directory on the changed paths, one ``get_many`` per depth."""
    trie: _Trie = {}
    for parts in dir_paths:
        node = trie
        for name in parts:
            node = node.setdefault(name, {})
    frontier: list[tuple[_Dir, _Trie]] = [(root, trie)]
    while frontier:
        wanted: list[tuple[_Dir, bytes, ObjectId, _Trie]] = []
        for d, node in frontier:
            for name, sub in node.items():
                item = d.get(name)
                if isinstance(item, TreeItem) and item.mode == MODE_DIR:
                    wanted.append((d, name, item.oid, sub))
        trees = load_trees(objects, (w[2] for w in wanted), keep_bytes=True)
        frontier = []
        for d, name, oid, sub in wanted:
            loaded = _Dir(oid, trees[oid])
            d.set(name, loaded)
            if sub:
                frontier.append((loaded, sub))


def _child_dir(objects: ObjectStore, d: _Dir, name: bytes) -> _Dir | None:
    """The loaded subdirectory ``name`` of ``d`` (loading it if needed), None if not a dir."""
    item = d.get(name)
    if isinstance(item, _Dir):
        return item
    if item is not None and item.mode == MODE_DIR:
        loaded = _Dir(item.oid, load_tree(objects, item.oid, keep_bytes=True))
        d.set(name, loaded)
        return loaded
    return None


def _delete(objects: ObjectStore, root: _Dir, path: str, parts: tuple[bytes, ...]) -> None:
    d = root
    chain = [root]
    for name in parts[:-1]:
        sub = _child_dir(objects, d, name)
        if sub is None:
            raise NotFound(f"cannot delete {path!r}: it does not exist")
        d = sub
        chain.append(d)
    if d.get(parts[-1]) is None:
        raise NotFound(f"cannot delete {path!r}: it does not exist")
    d.delete(parts[-1])
    for c in chain:
        c.dirty = True


def _write(
    objects: ObjectStore,
    root: _Dir,
    path: str,
    parts: tuple[bytes, ...],
    item: TreeItem,
) -> tuple[bool, ObjectId | None]:
    """Put ``item`` at ``parts``: (False, _) when the identical entry is already there,
    else (True, the id of the file it replaces or None): the store's delta hint."""
    d = root
    chain = [root]
    for i, name in enumerate(parts[:-1]):
        existing = d.get(name)
        sub = _child_dir(objects, d, name)
        if sub is None:
            if existing is not None:
                where = "/".join(path.split("/")[: i + 1])
                raise InvalidInput(f"cannot write {path!r}: {where!r} is a file")
            sub = _Dir(None, Tree())
            d.set(name, sub)
        d = sub
        chain.append(d)
    last = d.get(parts[-1])
    if isinstance(last, _Dir):
        if not last.is_empty():
            raise InvalidInput(f"cannot write {path!r}: it is a directory")
    elif last is not None:
        if last.mode == MODE_DIR:
            raise InvalidInput(f"cannot write {path!r}: it is a directory")
        if last.mode == item.mode and last.oid == item.oid:
            return False, None
    d.set(parts[-1], item)
    for c in chain:
        c.dirty = True
    return True, last.oid if isinstance(last, TreeItem) else None


def _item_key(item: TreeItem) -> bytes:
    return tree_sort_key(item.name, item.mode)


def merge_items(
    base: tuple[TreeItem, ...], names: Iterable[bytes], added: Iterable[TreeItem]
) -> tuple[TreeItem, ...]:
    """``base`` (entries in git order, names unique) without the entries called ``names``
    and with ``added`` (names unique, each in ``names`` or absent from ``base``), in git
    order: what ``Tree.of`` would order, at the cost of the edit (a binary search per
    name and per added entry, then C-level slice copies), not a sort of ``base``."""
    return _merge(base, None, names, added)[0]


def _records_len(items: tuple[TreeItem, ...]) -> int:
    """The canonical serialized length of ``items``: ``<mode> <name>\\0<id>`` each, the
    mode 5 octal digits for a directory (40000) and 6 for every other mode git stores."""
    return 28 * len(items) + sum(map(len, map(_NAME, items))) - countOf(map(_MODE, items), MODE_DIR)


#: Up to this many edits in a directory, each finds its offset in the stored bytes by a
#: search (one pass over them each) rather than the entries before it being counted.
_SEARCHED_EDITS: Final = 4


def _record(item: TreeItem) -> bytes:
    return b"%o %s\0%s" % (item.mode, item.name, item.oid)


def _record_len(item: TreeItem) -> int:
    return 27 + len(item.name) + (item.mode != MODE_DIR)


def _offset(base: tuple[TreeItem, ...], data: bytes, pos: int) -> int:
    """The byte offset of ``base[pos]``'s record in ``data`` (``base``'s canonical bytes).

    Its exact bytes (mode, name, NUL, 20-byte id) occur there; when they occur nowhere
    else (another entry would need the same id and a name ending in `` <mode> <name>``),
    the one place found is it. Otherwise the entries before it are counted."""
    if pos == len(base):
        return len(data)
    record = _record(base[pos])
    at = data.find(record)
    if at >= 0 and data.find(record, at + 1) < 0:
        return at
    return _records_len(base[:pos])


def _merge(
    base: tuple[TreeItem, ...],
    data: bytes | None,
    names: Iterable[bytes],
    added: Iterable[TreeItem],
) -> tuple[tuple[TreeItem, ...], bytes | None]:
    """:func:`merge_items`, and when ``data`` (``base``'s canonical bytes) is given, the
    merged tree's canonical bytes spliced from it: the untouched runs of records are
    copied as byte slices, only the added entries are formatted."""
    removed: list[int] = []
    n = len(base)
    for name in names:
        # A name sorts as itself (file) or as name + "/" (directory): try both.
        for key in (name, name + b"/"):
            pos = bisect_left(base, key, key=_item_key)
            if pos < n and base[pos].name == name:
                removed.append(pos)
                break
    # (position, 0 = insert before it / 1 = drop it, key, item)
    events: list[tuple[int, int, bytes, TreeItem | None]] = [(p, 1, b"", None) for p in removed]
    for new in added:
        key = _item_key(new)
        events.append((bisect_left(base, key, key=_item_key), 0, key, new))
    if not events:
        return base, data
    events.sort(key=lambda e: e[:3])
    # A few edits find their records' offsets with a search of the bytes; many walk
    # the runs between them (each entry counted once, C-level).
    search = len(events) <= _SEARCHED_EDITS
    out: list[TreeItem] = []
    chunks: list[bytes] = []
    cur = 0
    offset = 0  # byte offset of base[cur] in data
    for pos, drop, _, item in events:
        run = base[cur:pos]
        out.extend(run)
        if data is not None and run:
            end = _offset(base, data, pos) if search else offset + _records_len(run)
            chunks.append(data[offset:end])
            offset = end
        cur = pos
        if drop:
            if data is not None:
                offset += _record_len(base[pos])
            cur = pos + 1
        else:
            assert item is not None
            out.append(item)
            if data is not None:
                chunks.append(_record(item))
    out.extend(base[cur:])
    if data is not None:
        chunks.append(data[offset:])
    return tuple(out), b"".join(chunks) if data is not None else None


def _serialize(
    root: _Dir,
    out: list[tuple[bytes, bytes]],
    built: dict[ObjectId, Tree],
    bases: list[ObjectId | None],
) -> ObjectId | None:
    """The id of ``root`` after the edits (None when it ended up empty), queuing new trees
    in ``out`` (children before parents, each with the tree it replaces in ``bases``, a
    delta hint for the store) and keeping them parsed in ``built``. Each ``_Dir`` gets its
    id in ``new_oid``.

    Only the names a directory's edits touched are looked at: they are merged into the
    stored tree's (sorted) entries. Post-order over an explicit stack rather than
    recursion: a path within the 4096-byte limit can be ~2000 directories deep, beyond
    Python's recursion limit.
    """
    stack: list[tuple[_Dir, bool]] = [(root, False)]
    while stack:
        d, children_done = stack.pop()
        if not d.dirty:
            d.new_oid = d.oid
            continue
        if not children_done:
            stack.append((d, True))
            stack.extend((c, False) for c in d.changed.values() if isinstance(c, _Dir))
            continue
        added: list[TreeItem] = []
        for name, child in d.changed.items():
            if isinstance(child, _Dir):
                if child.new_oid is not None:
                    added.append(TreeItem(name, MODE_DIR, child.new_oid))
            elif child is not None:
                added.append(child)
        # Names come from a dict (unique) and the merge keeps git order: no re-check.
        # The stored tree's canonical bytes, when known, are spliced, not re-formatted.
        items, data = _merge(d.base, d.data, d.orig, added)
        if not items:
            d.new_oid = None  # git has no empty directories
            continue
        tree = Tree.presorted(items, data)
        data = tree.serialize()
        out.append((b"tree", data))
        bases.append(d.oid)
        oid = hash_object(b"tree", data)
        built[oid] = tree
        d.new_oid = oid
    return root.new_oid


def _changed_paths(objects: ObjectStore, root: _Dir) -> list[str]:
    """The non-directory paths whose entry differs between the stored tree ``root`` was
    loaded from (the empty tree when new) and its serialized result: exactly the paths
    of ``diff_trees(old, new)``, in the same (path byte) order, found from the names the
    edits touched. A subtree the edits did not load entry by entry (a deleted directory,
    a directory rebuilt in place of another) is diffed as a whole."""
    from govc_db.core.diff import diff_trees  # diff imports this module

    found: list[bytes] = []
    stack: list[tuple[bytes, _Dir]] = [(b"", root)]
    while stack:
        prefix, d = stack.pop()
        if not d.dirty:
            continue
        for name, o in d.orig.items():
            v = d.changed.get(name)
            path = prefix + name
            if isinstance(v, _Dir):
                new_mode, new_oid = (MODE_DIR, v.new_oid) if v.new_oid is not None else (0, None)
            elif v is not None:
                new_mode, new_oid = v.mode, v.oid
            else:
                new_mode, new_oid = 0, None
            old_mode, old_oid = (o.mode, o.oid) if o is not None else (0, None)
            if old_mode == new_mode and old_oid == new_oid:
                continue
            old_sub = old_oid if old_mode == MODE_DIR else None
            new_sub = new_oid if new_mode == MODE_DIR else None
            if old_sub != new_sub:
                if isinstance(v, _Dir) and new_sub is not None and v.oid == old_sub:
                    # Loaded from the old subtree (or new where none was): its own
                    # touched names are the whole difference.
                    stack.append((path + b"/", v))
                else:
                    found.extend(
                        path + b"/" + encode_path(c.path)
                        for c in diff_trees(objects, old_sub, new_sub)
                    )
            # The non-directory side(s), as diff_trees reports them.
            if old_sub is not None:
                old_mode = 0
            if new_sub is not None:
                new_mode = 0
            if old_mode or new_mode:
                found.append(path)
    found.sort()
    return [decode_path(p) for p in found]


def build_tree(
    objects: ObjectStore, base: ObjectId | None, changes: Mapping[str, File | None]
) -> ObjectId:
    """Apply ``changes`` to tree ``base``; see :func:`build_tree_with_paths` (this is its
    tree id alone, without reading what the changed paths need, e.g. a deleted
    directory's subtrees)."""
    return _build(objects, base, changes)[0]


def build_tree_with_paths(
    objects: ObjectStore, base: ObjectId | None, changes: Mapping[str, File | None]
) -> tuple[ObjectId, list[str]]:
    """Apply ``changes`` (validated paths -> File to write, or None to delete) to tree
    ``base`` (None = empty) and return the new root tree id, writing new blobs and trees.

    Rules: deletions apply before writes. Deleting a path that does not exist is
    ``NotFound``; deleting a directory path removes everything below it. Writing ``a/b``
    where ``a`` is (after deletions) a file, or writing ``a`` where ``a`` is (after
    deletions) a directory, is ``InvalidInput``. Directories left empty disappear (git has
    no empty trees); an empty root is the empty tree. Only the trees on changed paths are
    loaded and rewritten.

    Also returns the changed file paths, exactly ``[c.path for c in diff_trees(objects,
    base, new)]``, derived from the edits (the commit index's rows) rather than by
    comparing the two trees entry by entry.
    """
    oid, root = _build(objects, base, changes)
    return oid, _changed_paths(objects, root)


def _build(
    objects: ObjectStore, base: ObjectId | None, changes: Mapping[str, File | None]
) -> tuple[ObjectId, _Dir]:
    split = [(path, tuple(encode_path(path).split(b"/")), f) for path, f in changes.items()]
    root = (
        _Dir(base, load_tree(objects, base, keep_bytes=True))
        if base is not None
        else _Dir(None, Tree())
    )
    _prefetch(objects, root, (parts[:-1] for _, parts, _ in split))

    # Deepest deletions first, and no pruning until the end: every deletion is then
    # checked against the base tree, so {"a": None, "a/x": None} deletes both instead of
    # failing on whichever comes second.
    deletions = sorted(((p, s) for p, s, f in split if f is None), key=lambda d: -len(d[1]))
    for path, parts in deletions:
        _delete(objects, root, path, parts)

    new_objects: list[tuple[bytes, bytes]] = []
    bases: list[ObjectId | None] = []  # the version each replaces: a hint for the store
    for path, parts, f in split:
        if f is None:
            continue
        if isinstance(f.data, bytes):
            item = TreeItem(parts[-1], f.mode, Blob(f.data).id)
            changed, replaced = _write(objects, root, path, parts, item)
            if changed:
                new_objects.append((b"blob", f.data))
                bases.append(replaced)
            continue
        # Large content as a stream: the store hashes, cuts and writes it in one pass
        # (an ObjectStore that takes streams offers ``put_stream``).
        put_stream = getattr(objects, "put_stream", None)
        if put_stream is None:
            raise GovcError("this object store cannot store content streams")
        item = TreeItem(parts[-1], f.mode, put_stream(b"blob", f.data))
        _write(objects, root, path, parts, item)

    built: dict[ObjectId, Tree] = {}
    oid = _serialize(root, new_objects, built, bases)
    if oid is None:
        oid = EMPTY_TREE
        new_objects.append((b"tree", b""))
        bases.append(None)
    if new_objects:
        objects.put_many(new_objects, bases)
        # The new trees are known parsed: the commit's diff against its parent (and the
        # next commit on the branch) need not parse them again.
        memo: TreeMemo | None = getattr(objects, "tree_memo", None)
        if memo is not None and built:
            memo.put_trees(built)
    return oid, root
