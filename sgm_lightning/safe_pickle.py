"""Read pickled data files without running code.

``pickle.load`` calls whatever a file names (``os.system``, ``eval``...), so a data file from
an untrusted folder could run code. :func:`load_data_pickle` unpickles with an allow-list:
only the builtin containers the pickle machine makes itself (dict, list, tuple, str, bytes,
numbers) and NumPy's array reconstruction. Any other global is refused with the file named.
This is what the CIFAR-10 python batches need (a dict of bytes keys, a uint8 ndarray and lists).
"""

from __future__ import annotations

import io
import os
import pickle

#: (module, name) pairs a data pickle may reference
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),   # NumPy < 2 pickles (the CIFAR-10 files)
    ("numpy._core.multiarray", "_reconstruct"),  # NumPy >= 2 pickles
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),                       # bytes in protocol-2 pickles written by Python 3
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str, **kw):
        super().__init__(file, **kw)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{self.where}: refers to {module}.{name}, which a data file never "
                                         "needs; refusing to load it (it could run code)")
        return super().find_class(module, name)


def load_data_pickle(path: str | os.PathLike, *, encoding: str = "latin1"):
    """Unpickle ``path`` allowing only plain data (see module docstring). Anything else, or a
    damaged file, raises ``ValueError`` naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path), encoding=encoding).load()
    except pickle.UnpicklingError as err:
        raise ValueError(str(err) if str(path) in str(err) else f"{path}: not a readable data pickle ({err})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{path}: not a readable data pickle ({type(err).__name__}: {err})") from None
