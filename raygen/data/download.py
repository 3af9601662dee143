"""Explicit, checksum-verified downloads. Used only when the config says `data.download=true`.

Nothing in raygen downloads implicitly (DESIGN: "no network at run time unless a dataset download is
explicitly requested"). A file is streamed into a temporary name in the destination directory, its md5 is
checked, and only then is it renamed into place, so a crash or a bad mirror never leaves a file that a
later load would trust. Only the standard library is used (urllib with a timeout).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from raygen.data.base import DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    filename: str,
    directory: Path,
    md5: str | None,
    mirrors: Sequence[str],
    timeout: float = 30.0,
) -> Path:
    """Download `filename` from the first mirror that serves it with the right md5; return its path.

    Each mirror is a base URL (`https://host/dir/`, or `file:///dir/` for local copies). Raises DataError
    naming the file, every mirror's failure and the directory to put the file in by hand.
    """
    directory = Path(directory)
    target = directory / filename
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {directory} to download {filename} into: {err}") from None
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        tmp: str | None = None
        try:
            log.info("downloading %s -> %s", url, target)
            with urllib.request.urlopen(url, timeout=timeout) as response:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".part")
                digest = hashlib.md5()
                with os.fdopen(fd, "wb") as out:
                    while chunk := response.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            got = digest.hexdigest()
            if md5 is not None and got != md5:
                failures.append(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
                continue
            os.replace(tmp, target)
            tmp = None
            log.info("saved %s (md5 %s)", target, got)
            return target
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError/timeouts are OSErrors
            failures.append(f"{url}: {err}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    tried = "\n  ".join(failures) or "(no mirrors were given)"
    raise DataError(
        f"could not download {filename}:\n  {tried}\n"
        f"Download it by other means and put it at {target}" + (f" (md5 {md5})." if md5 else ".")
    )
