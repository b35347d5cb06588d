"""Build the gitlab-runner STAND-IN as a .deb (dpkg-deb), for the testbed's local-debs install path."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

CONTROL = """Package: gitlab-runner
Version: 17.5.0~berth-standin
Architecture: all
Maintainer: berth tests <berth@localhost>
Depends: python3
Description: STAND-IN for GitLab Runner, for berth's tests only
 Reads config.toml, reloads on SIGHUP, stops gracefully on SIGQUIT, keeps .runner_system_id as the runner
 does. Its postinst installs the systemd unit and starts the runner, as GitLab's package does. Never runs jobs.
"""
# The maintainer scripts, as GitLab's package has them (packaging/scripts/postinst.deb, prerm.deb).
SCRIPTS = ("postinst", "prerm")


def build_deb(out_dir: Path) -> Path:
    """Build (once per content) and return the path of the stand-in package."""
    sources = [HERE / name for name in ("gitlab-runner", *SCRIPTS)]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + CONTROL.encode()).hexdigest()[:12]
    target = out_dir / "gitlab-runner-standin.deb"
    stamp = out_dir / "gitlab-runner-standin.digest"
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(CONTROL)
        for script in SCRIPTS:
            shutil.copy(HERE / script, root / "DEBIAN" / script)
            (root / "DEBIAN" / script).chmod(0o755)
        (root / "usr" / "bin").mkdir(parents=True)
        shutil.copy(HERE / "gitlab-runner", root / "usr" / "bin" / "gitlab-runner")
        (root / "usr" / "bin" / "gitlab-runner").chmod(0o755)
        # No unit file: `gitlab-runner install` (run by the postinst) writes /etc/systemd/system/gitlab-runner.service.
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(target)], check=True,
                       capture_output=True)
    stamp.write_text(digest)
    return target
