"""Render a report page to PNG with a headless Chromium, to check that it displays.

Used by the browser test; it is not needed to build a report. Network access is cut off for the
browser (every host name resolves to nothing, no proxy), so a page that needed a remote resource
would render without it rather than fetch it.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of the first Chromium-like browser on ``PATH``, else None."""
    for name in BROWSERS:
        p = shutil.which(name)
        if p:
            return p
    return None


def screenshot(html_path: str | Path, png_path: str | Path, *, window: tuple[int, int] = (1280, 2400),
               timeout_s: float = 120.0, net_log: str | Path | None = None) -> bool:
    """Screenshot ``html_path`` into ``png_path`` (``window`` = width, height in px).

    Returns False when no browser is found or it fails (logged); True when ``png_path`` was
    written. ``net_log``: also write Chromium's network log (JSON) there, to check which URLs the
    page requested.
    """
    exe = find_chromium()
    if exe is None:
        log.info("no chromium on PATH (tried %s): screenshot skipped", ", ".join(BROWSERS))
        return False
    html = Path(html_path).resolve()
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="neuroxai-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking", "--disable-sync",
               "--disable-component-update", "--no-proxy-server",
               "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
               f"--screenshot={png}"]
        if net_log is not None:
            cmd.append(f"--log-net-log={Path(net_log).resolve()}")
        cmd.append(html.as_uri())
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("chromium screenshot failed: %s", e)
            return False
    if not png.is_file() or png.stat().st_size == 0:
        log.warning("chromium wrote no screenshot (exit %s): %s", proc.returncode, proc.stderr[-2000:])
        return False
    return True
