"""A power-cut fault layer for tests: what a disk that honours fsync keeps when the power goes.

A SIGKILL does not lose a write that was never synced: the kernel's page cache still holds it and
writes it out later.  A power cut does.  The layer has two halves:

* `powercut.c`, an LD_PRELOAD shim: for the tree under ``$POWERCUT_DIR`` it records each file's
  content at its last successful ``fsync``/``fdatasync`` and each directory's entries at its
  last sync, in ``<tree>.powercut/`` beside the tree (the format is in the C file);
* `cut_power(tree)`, run by the test once the process is dead: each file whose name was made
  durable by a directory sync gets its content at its last sync (empty if it was never synced;
  a deleted file comes back if its deletion never was); every other file goes; ``-shm`` files
  (SQLite's shared memory, never synced) go.

The tree's own directory is taken as durable (on the box the installer creates it).
What the layer does not model: docs/power-cut.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("powercut.c")


def build_shim(out_dir: Path) -> Path:
    """Compile the shim into ``out_dir``; skip the test when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (scripts/test.sh installs gcc)")
    lib = out_dir / "powercut.so"
    r = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(lib), str(SOURCE), "-ldl"], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"the power-cut shim does not compile:\n{r.stderr}")
    return lib


def state_dir(tree: Path) -> Path:
    return tree.parent / f"{tree.name}.powercut"


def shim_env(shim: Path, tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process whose writes under ``tree`` go through the layer."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(p for p in (str(shim), env.get("LD_PRELOAD", "")) if p)
    env["POWERCUT_DIR"] = str(tree)
    return env


@dataclass
class Cut:
    """What the cut did to each file (paths relative to the tree)."""

    kept: list[str] = field(default_factory=list)  # content at its last sync
    emptied: list[str] = field(default_factory=list)  # the name was durable, the content never synced
    deleted: list[str] = field(default_factory=list)  # the name never became durable, or memory (-shm)
    restored: list[str] = field(default_factory=list)  # deleted after its last sync, not durably


def _record_name(rel: str) -> str:
    """The name of a directory's record (as powercut.c writes it): the tree is a lone "%"."""
    return "%" if rel == "." else rel.replace("%", "%25").replace("/", "%2F")


def _listing(state: Path, rel: str) -> dict[str, tuple[str, str]]:
    """{name: (kind, file id)} of a directory at its last sync; {} if it was never synced."""
    p = state / "dirs" / _record_name(rel)
    if not p.exists():
        return {}
    out = {}
    for line in p.read_text().splitlines():
        kind, fid, name = line.split("\t", 2)
        out[name] = (kind, fid)
    return out


def cut_power(tree: Path) -> Cut:
    """Rewrite ``tree`` as a disk that honours fsync would hold it after a power cut.

    Call it only once every process writing under ``tree`` is dead.  Raises if the shim never
    ran (a layer that silently did nothing would make every test pass).
    """
    state = state_dir(tree)
    if not (state / "data").is_dir():
        raise RuntimeError(f"no power-cut records in {state}: was the shim preloaded (LD_PRELOAD, POWERCUT_DIR)?")
    cut = Cut()

    def remove(p: Path, rel: str) -> None:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        cut.deleted.append(rel)

    def restore(d: Path, rel: str) -> None:
        listing = {n: v for n, v in _listing(state, rel).items() if not n.endswith("-shm")}
        for child in sorted(d.iterdir()):
            crel = child.name if rel == "." else f"{rel}/{child.name}"
            entry = listing.get(child.name)
            if entry is None or (entry[0] == "d") != (child.is_dir() and not child.is_symlink()):
                remove(child, crel)
        for name, (kind, fid) in sorted(listing.items()):
            p = d / name
            crel = name if rel == "." else f"{rel}/{name}"
            if kind == "d":
                p.mkdir(exist_ok=True)
                restore(p, crel)
                continue
            existed = p.exists()
            data = state / "data" / fid
            p.write_bytes(data.read_bytes() if data.exists() else b"")
            (cut.kept if data.exists() else cut.emptied).append(crel)
            if not existed:
                cut.restored.append(crel)

    restore(tree, ".")
    shutil.rmtree(state)  # the cut tree is durable now: the next process under the shim records it as it starts
    return cut
