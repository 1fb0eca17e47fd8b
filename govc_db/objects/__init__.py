"""The pure git object model: ids, values, serialization, hashing, validation.

Nothing in this package imports a database module.
"""

from govc_db.objects.ids import HEX_LEN, RAW_LEN, ObjectId, hash_object, hex_to_oid, oid_to_hex
from govc_db.objects.kinds import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_GITLINK,
    MODE_LINK,
    TYPE_NAMES,
    TYPE_NUMBERS,
    Blob,
    Commit,
    GitObject,
    Tag,
    Tree,
    TreeItem,
    mode_type,
    parse_object,
    tree_sort_key,
)
from govc_db.objects.signature import Signature, format_offset, parse_signature
from govc_db.objects.validate import (
    check_path,
    check_path_set,
    check_ref_name,
    check_repository_name,
    check_short_ref_name,
)

__all__ = [
    "HEX_LEN",
    "MODE_DIR",
    "MODE_EXEC",
    "MODE_FILE",
    "MODE_GITLINK",
    "MODE_LINK",
    "RAW_LEN",
    "TYPE_NAMES",
    "TYPE_NUMBERS",
    "Blob",
    "Commit",
    "GitObject",
    "ObjectId",
    "Signature",
    "Tag",
    "Tree",
    "TreeItem",
    "check_path",
    "check_path_set",
    "check_ref_name",
    "check_repository_name",
    "check_short_ref_name",
    "format_offset",
    "hash_object",
    "hex_to_oid",
    "mode_type",
    "oid_to_hex",
    "parse_object",
    "parse_signature",
    "tree_sort_key",
]
