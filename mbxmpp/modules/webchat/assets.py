"""The web chat's assets: Converse.js, one pinned version from the npm registry, its integrity
hash checked, unpacked into the assets directory. Nothing of it is kept in this repository.

    python -m mbxmpp webchat fetch               # `npm pack` through npm's configured registry
    python -m mbxmpp webchat fetch --tarball F   # or a tarball obtained some other way
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile

PACKAGE = "converse.js"
VERSION = "14.0.0"
# The registry's dist.integrity of converse.js@14.0.0 (SRI: sha512 of the tarball).
INTEGRITY = "sha512-LFUg030jDalV47vI/vyVPqYPZfJYXFbubq8v0cFDe2zXNeeGEk3Up0Fj/WTzT6t+6do+cAIToy73eAj7RNDj2Q=="
# What /chat needs of the package: its dist/ folder.
DIST_PREFIX = "package/dist/"
MARKER = ".integrity"


class AssetsError(Exception):
    pass


def release_dir(assets_dir: str) -> str:
    return os.path.join(assets_dir, f"{PACKAGE}-{VERSION}")


def installed(assets_dir: str) -> bool:
    """Whether the pinned release is unpacked there (and was checked when it was)."""
    try:
        with open(os.path.join(release_dir(assets_dir), MARKER)) as f:
            return f.read().strip() == INTEGRITY
    except OSError:
        return False


def install_hint(assets_dir: str) -> str:
    return (f"The web chat's files (Converse.js {VERSION}) are not installed in {assets_dir}. "
            "Install them with: python -m mbxmpp webchat fetch")


def check_integrity(tarball: str) -> None:
    algo, _, want = INTEGRITY.partition("-")
    h = hashlib.new(algo)
    with open(tarball, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    got = base64.b64encode(h.digest()).decode()
    if got != want:
        raise AssetsError(f"{tarball}: integrity mismatch: expected {INTEGRITY}, got {algo}-{got}")


def npm_pack(dest: str) -> str:
    """Fetch the pinned tarball with npm (its own registry settings) into ``dest``."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetsError("npm is not installed: install it (Debian: apt install npm), or fetch "
                          f"{PACKAGE}-{VERSION}.tgz elsewhere and pass --tarball")
    try:
        out = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", dest],
                             capture_output=True, text=True, timeout=600, check=True)
    except subprocess.CalledProcessError as e:
        raise AssetsError(f"npm pack failed: {e.stderr.strip()[-2000:]}") from e
    except subprocess.TimeoutExpired as e:
        raise AssetsError("npm pack took more than 10 minutes") from e
    name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else f"{PACKAGE}-{VERSION}.tgz"
    return os.path.join(dest, os.path.basename(name))


def unpack(tarball: str, assets_dir: str) -> str:
    """Check and unpack dist/ of the tarball; replaces an earlier unpacking atomically."""
    check_integrity(tarball)
    target = release_dir(assets_dir)
    os.makedirs(assets_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".webchat-", dir=assets_dir)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(DIST_PREFIX) or not (m.isfile() or m.isdir()):
                    continue
                rel = m.name[len(DIST_PREFIX):]
                if not rel or rel.startswith("/") or ".." in rel.split("/"):
                    continue
                m.name = rel
                members.append(m)
            tar.extractall(staging, members=members, filter="data")
        with open(os.path.join(staging, MARKER), "w") as f:
            f.write(INTEGRITY + "\n")
        old = target + ".old"
        if os.path.exists(target):
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def fetch(assets_dir: str, tarball: str | None = None) -> str:
    if tarball is not None:
        return unpack(tarball, assets_dir)
    with tempfile.TemporaryDirectory() as tmp:
        return unpack(npm_pack(tmp), assets_dir)
