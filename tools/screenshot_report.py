"""Screenshot a report page (report.py's report.html) in headless Chromium:
what a browser shows, offline, for a look without a desktop.

    python tools/screenshot_report.py REPORT.html OUT.png [--height 3000]

Needs Debian's `chromium` package (apt-get install chromium). Chromium runs
with a fresh profile in a temporary folder and no network features, and
writes the PNG itself: to a temporary name beside OUT.png, renamed when
whole. Not part of the test suite.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

BROWSERS = ('chromium', 'chromium-browser')
WIDTH = 1400


def browser():
    """The Chromium executable on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page, out, height=3000, timeout=120):
    """Render `page` (an HTML file) at WIDTH x `height` into PNG `out`."""
    exe = browser()
    if exe is None:
        raise RuntimeError('no chromium on PATH: apt-get install chromium')
    folder = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(out) + '.', suffix='.png')
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory() as profile:
            cmd = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                   '--no-first-run', '--disable-background-networking',
                   '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
                   f'--screenshot={tmp}', f'--window-size={WIDTH},{height}',
                   'file://' + os.path.abspath(page)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not os.path.getsize(tmp):
            raise RuntimeError(f'chromium exited with {done.returncode}: '
                               + (done.stderr.strip().splitlines() or ['no output'])[-1])
        os.chmod(tmp, 0o644)  # as any picture (mkstemp makes it owner-only)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('page', help='report.html')
    parser.add_argument('out', help='PNG to write')
    parser.add_argument('--height', type=int, default=3000, help='window height in pixels')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.page):
        sys.exit(f'screenshot_report.py: error: {args.page}: no such file')
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        sys.exit(f'screenshot_report.py: error: {args.out}: its folder does not exist')
    if args.height < 1:
        sys.exit(f'screenshot_report.py: error: --height {args.height}: expected a positive number')
    try:
        screenshot(args.page, args.out, args.height)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f'screenshot_report.py: error: {e}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
