"""Write outputs under temporary names and rename them into place only when complete.

A failed or interrupted export leaves nothing under the final name (temporary files are removed
on failure; a hard kill can leave a hidden ``.NAME.*.part`` next to the output, never ``NAME``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from thisme_stac.errors import ConfigError


def _is_empty(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir())
    return path.stat().st_size == 0


def check_target(final: Path, *, overwrite: bool, directory: bool) -> None:
    """Refuse an output that exists and holds data, unless ``overwrite``."""
    if not final.exists() and not final.is_symlink():
        return
    if overwrite:
        return
    if directory and not final.is_dir():
        raise ConfigError(f"{final} exists and is not a directory (use --overwrite to replace it)")
    if not directory and final.is_dir():
        raise ConfigError(f"{final} is a directory; give a file name for this format")
    if not _is_empty(final):
        raise ConfigError(f"{final} exists and is not empty (use --overwrite to replace it)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Staging:
    """Temporary siblings of the final outputs, renamed into place together by ``commit``.

    Use as a context manager: leaving the block with an exception removes every temporary path;
    leaving it normally commits (renames in the order staged).
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []
        self._committed = False

    def _temp_name(self, final: Path) -> Path:
        return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.part")

    def file(self, final: Path) -> Path:
        """A temporary path (not created) whose content becomes ``final`` on commit."""
        check_target(final, overwrite=self.overwrite, directory=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self._temp_name(final)
        self._staged.append((temp, final))
        return temp

    def directory(self, final: Path) -> Path:
        """A new empty temporary directory that becomes ``final`` on commit."""
        check_target(final, overwrite=self.overwrite, directory=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self._temp_name(final)
        temp.mkdir()
        self._staged.append((temp, final))
        return temp

    def commit(self) -> None:
        for temp, _ in self._staged:
            if not temp.exists():
                raise FileNotFoundError(f"{temp} was not written")
        for temp, final in self._staged:
            old: Path | None = None
            if final.exists() or final.is_symlink():
                old = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old")
                os.replace(final, old)
            try:
                os.replace(temp, final)
            except BaseException:
                if old is not None:
                    os.replace(old, final)
                raise
            if old is not None:
                _remove(old)
        self._committed = True

    def abort(self) -> None:
        for temp, _ in self._staged:
            _remove(temp)
        self._staged.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
