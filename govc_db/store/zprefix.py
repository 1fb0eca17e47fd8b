"""zstd deltas (encoding 3) through libzstd's own prefix API, with reused contexts.

A delta row is a magic-less zstd frame compressed with its base's content as a
raw-content dictionary. python-zstandard binds a dictionary to a compressor or
decompressor when it is built, so every delta decoded or encoded through it builds a
new context: measured on a 800-byte bench file, 71 µs to decode a frame whose
decompression takes 4 µs, and 280 µs to encode one. A raw-content dictionary is a
*prefix* in zstd's terms (the frame's matches may reach back into it; no tables, no
id), and libzstd can reference a prefix for the next frame of a long-lived context
(``ZSTD_CCtx_refPrefix`` / ``ZSTD_DCtx_refPrefix``, stable API since 1.4.0) for the
cost of a pointer. This module calls those functions through :mod:`ctypes` on one
compression and one decompression context per thread: 3 µs a decode.

The frames are the same format either way (checked when the library loads: a frame
made by python-zstandard with a raw dictionary decodes here and the other way round,
else :func:`load` returns None). Where libzstd cannot be loaded (no shared library, a
version before 1.4, the check failing) :func:`load` returns None and the codec uses
python-zstandard as before (``Codec(native=False)`` too: tests compare both paths).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Final

import zstandard

from govc_db.errors import GovcError

__all__ = ["PrefixZstd", "load"]

# libzstd parameter numbers (zstd.h; the format ones are ZSTD_c/d_experimentalParam2/1,
# whose values are fixed by the library's ABI since 1.4.0).
_C_LEVEL: Final = 100
_C_CONTENT_SIZE: Final = 200
_C_CHECKSUM: Final = 201
_C_DICT_ID: Final = 202
_C_FORMAT: Final = 10
_D_WINDOW_LOG_MAX: Final = 100
_D_FORMAT: Final = 1000
_MAGICLESS: Final = 1
_RESET_SESSION: Final = 1
#: Decoders refuse windows over 2**31 bytes (as :data:`govc_db.store.codec.MAX_WINDOW`).
_WINDOW_LOG_MAX: Final = 31
_MIN_VERSION: Final = 10400

_sz = ctypes.c_size_t
_vp = ctypes.c_void_p


def _bind(lib: Any) -> None:
    lib.ZSTD_versionNumber.restype = ctypes.c_uint
    lib.ZSTD_versionNumber.argtypes = []
    lib.ZSTD_createCCtx.restype = _vp
    lib.ZSTD_createCCtx.argtypes = []
    lib.ZSTD_freeCCtx.restype = _sz
    lib.ZSTD_freeCCtx.argtypes = [_vp]
    lib.ZSTD_createDCtx.restype = _vp
    lib.ZSTD_createDCtx.argtypes = []
    lib.ZSTD_freeDCtx.restype = _sz
    lib.ZSTD_freeDCtx.argtypes = [_vp]
    lib.ZSTD_CCtx_setParameter.restype = _sz
    lib.ZSTD_CCtx_setParameter.argtypes = [_vp, ctypes.c_int, ctypes.c_int]
    lib.ZSTD_DCtx_setParameter.restype = _sz
    lib.ZSTD_DCtx_setParameter.argtypes = [_vp, ctypes.c_int, ctypes.c_int]
    lib.ZSTD_CCtx_reset.restype = _sz
    lib.ZSTD_CCtx_reset.argtypes = [_vp, ctypes.c_int]
    lib.ZSTD_DCtx_reset.restype = _sz
    lib.ZSTD_DCtx_reset.argtypes = [_vp, ctypes.c_int]
    lib.ZSTD_CCtx_refPrefix.restype = _sz
    lib.ZSTD_CCtx_refPrefix.argtypes = [_vp, ctypes.c_char_p, _sz]
    lib.ZSTD_DCtx_refPrefix.restype = _sz
    lib.ZSTD_DCtx_refPrefix.argtypes = [_vp, ctypes.c_char_p, _sz]
    lib.ZSTD_compressBound.restype = _sz
    lib.ZSTD_compressBound.argtypes = [_sz]
    lib.ZSTD_compress2.restype = _sz
    lib.ZSTD_compress2.argtypes = [_vp, ctypes.c_void_p, _sz, ctypes.c_char_p, _sz]
    lib.ZSTD_decompressDCtx.restype = _sz
    lib.ZSTD_decompressDCtx.argtypes = [_vp, ctypes.c_void_p, _sz, ctypes.c_char_p, _sz]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [_sz]


#: A thread keeps its output buffer for objects up to this size (larger ones get one of
#: their own, freed after the call).
_KEEP_BUFFER: Final = 1 << 20
#: ``size_t`` results at or above this are libzstd error codes (``(size_t)-code``).
_ERROR_MIN: Final = (1 << 64) - 1000 if ctypes.sizeof(ctypes.c_size_t) == 8 else (1 << 32) - 1000


class _Contexts:
    """One thread's compression and decompression contexts and output buffer (freed
    with the thread's state)."""

    __slots__ = ("buf", "cctx", "dctx", "level", "lib")

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.cctx: int | None = lib.ZSTD_createCCtx()
        self.dctx: int | None = lib.ZSTD_createDCtx()
        self.level = -1000
        self.buf: Any = ctypes.create_string_buffer(4096)
        if not self.cctx or not self.dctx:
            raise GovcError("libzstd could not allocate a context")
        for param, value in (
            (_C_CONTENT_SIZE, 0),
            (_C_CHECKSUM, 0),
            (_C_DICT_ID, 0),
            (_C_FORMAT, _MAGICLESS),
        ):
            self._check(lib.ZSTD_CCtx_setParameter(self.cctx, param, value))
        self._check(lib.ZSTD_DCtx_setParameter(self.dctx, _D_FORMAT, _MAGICLESS))
        self._check(lib.ZSTD_DCtx_setParameter(self.dctx, _D_WINDOW_LOG_MAX, _WINDOW_LOG_MAX))

    def _check(self, code: int) -> int:
        if self.lib.ZSTD_isError(code):
            raise GovcError("libzstd refused a context parameter")
        return code

    def buffer(self, size: int) -> Any:
        """A writable buffer of at least ``size`` bytes."""
        if size <= len(self.buf):
            return self.buf
        out = ctypes.create_string_buffer(size)
        if size <= _KEEP_BUFFER:
            self.buf = out
        return out

    def __del__(self) -> None:
        lib = self.lib
        if self.cctx:
            lib.ZSTD_freeCCtx(self.cctx)
            self.cctx = None
        if self.dctx:
            lib.ZSTD_freeDCtx(self.dctx)
            self.dctx = None


class PrefixZstd:
    """Magic-less zstd frames against a raw-content prefix, on per-thread contexts.

    Each call is two or three foreign calls (reference the prefix, run the frame) into
    a buffer the thread keeps, then one copy out: a result equal to the size asked for
    is the only success (libzstd's error codes are huge ``size_t`` values), so no
    further ``ZSTD_isError`` call is needed."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self._local = threading.local()
        self.version: int = int(lib.ZSTD_versionNumber())
        self._c_prefix = lib.ZSTD_CCtx_refPrefix
        self._d_prefix = lib.ZSTD_DCtx_refPrefix
        self._compress = lib.ZSTD_compress2
        self._decompress = lib.ZSTD_decompressDCtx
        self._bound = lib.ZSTD_compressBound

    def _ctx(self) -> _Contexts:
        ctx: _Contexts | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = _Contexts(self._lib)
        return ctx

    def compress(self, data: bytes, prefix: bytes, level: int) -> bytes:
        """``data`` as a magic-less frame (no content size, checksum or dictionary id)
        that needs ``prefix`` to decode, at zstd ``level``."""
        lib = self._lib
        ctx = self._ctx()
        cctx = ctx.cctx
        if level != ctx.level:
            if lib.ZSTD_isError(lib.ZSTD_CCtx_setParameter(cctx, _C_LEVEL, level)):
                raise GovcError(f"libzstd refused compression level {level}")
            ctx.level = level
        cap = int(self._bound(len(data)))
        out = ctx.buffer(cap)
        if self._c_prefix(cctx, prefix, len(prefix)):
            lib.ZSTD_CCtx_reset(cctx, _RESET_SESSION)
            raise GovcError("libzstd refused the delta base")
        n = self._compress(cctx, out, cap, data, len(data))
        if n >= _ERROR_MIN:
            lib.ZSTD_CCtx_reset(cctx, _RESET_SESSION)
            raise GovcError("libzstd could not compress a delta")
        return ctypes.string_at(out, n)

    def decompress(self, frame: bytes, prefix: bytes, size: int) -> bytes:
        """The ``size`` bytes ``frame`` (made by :meth:`compress` or python-zstandard
        with ``prefix`` as a raw-content dictionary) decodes to; ``GovcError`` when it is
        corrupt or decodes to another size."""
        ctx = self._ctx()
        dctx = ctx.dctx
        out = ctx.buffer(size)
        if self._d_prefix(dctx, prefix, len(prefix)):
            self._lib.ZSTD_DCtx_reset(dctx, _RESET_SESSION)
            raise GovcError("stored object data is corrupt (cannot decompress)")
        n = self._decompress(dctx, out, size, frame, len(frame))
        if n != size:
            self._lib.ZSTD_DCtx_reset(dctx, _RESET_SESSION)
            if n >= _ERROR_MIN:
                raise GovcError("stored object data is corrupt (cannot decompress)")
            raise GovcError("stored object data is corrupt (delta size mismatch)")
        return ctypes.string_at(out, n)


def _interoperates(native: PrefixZstd) -> bool:
    """Frames cross both ways between this library and python-zstandard's raw-content
    dictionaries (the stored rows' format)."""
    base = b"".join(b"line %d of the base, with some words\n" % i for i in range(64))
    data = base.replace(b"words", b"other words")[::-1][:1500] + base[100:900]
    params = zstandard.ZstdCompressionParameters.from_level(
        3,
        source_size=len(data),
        dict_size=len(base),
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=0,
        write_checksum=0,
        write_dict_id=0,
    )
    d = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    theirs = zstandard.ZstdCompressor(dict_data=d, compression_params=params).compress(data)
    if native.decompress(theirs, base, len(data)) != data:
        return False
    ours = native.compress(data, base, 3)
    dd = zstandard.ZstdDecompressor(dict_data=d, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    return bool(dd.decompress(ours, max_output_size=len(data)) == data)


_LOADED: list[PrefixZstd | None] = []
_LOAD_LOCK = threading.Lock()


def load() -> PrefixZstd | None:
    """The native prefix codec, or None where it cannot be used (see the module
    docstring). Loaded and checked once per process."""
    with _LOAD_LOCK:
        if not _LOADED:
            _LOADED.append(_load())
        return _LOADED[0]


def _load() -> PrefixZstd | None:
    for name in ("libzstd.so.1", ctypes.util.find_library("zstd")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            _bind(lib)
            native = PrefixZstd(lib)
            if native.version < _MIN_VERSION or not _interoperates(native):
                continue
            return native
        except (OSError, AttributeError, GovcError, zstandard.ZstdError, MemoryError):
            continue
    return None
