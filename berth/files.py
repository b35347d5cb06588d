"""Writing files on the controller: to a temporary file beside the target, then renamed (never half-written)."""

from __future__ import annotations

from pathlib import Path


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with ``mode``; readers see the old file or the new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.touch(mode=mode)
    tmp.chmod(mode)             # touch's mode is filtered by the umask
    tmp.write_bytes(data)
    tmp.replace(target)
