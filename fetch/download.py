"""Resumable, verified HTTP downloads.

Bytes go to `<final>.part`; an interrupted download is resumed from there
with an HTTP Range request (in the same run after a retry, or in a later
run). Only a complete file that passes the size and checksum checks is
renamed to the final name, so a file under the final name is always whole.
"""
import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from common import outputs

from . import FetchError

CHUNK = 1 << 20
USER_AGENT = 'fcn-fetch/1.0 (+python urllib)'
# HTTP statuses worth retrying; anything else (404, 403, ...) will not change.
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
# Failures that say the host cannot be reached from here at all (offline, no
# name server, nothing listening): retrying in a few seconds would not help.
UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class VerificationError(FetchError):
    """The file is not the one the catalog describes."""


class IncompleteDownload(OSError):
    """The connection ended before the announced length arrived."""


def part_path(dest):
    dest = Path(dest)
    return dest.with_name(dest.name + '.part')


def file_digests(path, algorithms):
    """{algorithm: hex digest} of a file, in one pass."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, 'rb') as f:
        while block := f.read(CHUNK):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def verify(path, source):
    """Check size and recorded digests; return (size, sha256)."""
    size = Path(path).stat().st_size
    if source.size is not None and size != source.size:
        raise VerificationError(f'{path}: {size} bytes, expected {source.size}')
    expected = source.digests
    digests = file_digests(path, {'sha256', *expected})
    for name, value in expected.items():
        if digests[name] != value.lower():
            raise VerificationError(f'{path}: {name} {digests[name]}, expected {value}')
    return size, digests['sha256']


def _report(key, source, size, sha256):
    if source.sha256 is None:
        print(f"{key}: {size} bytes, sha256 {sha256}\n"
              f"  (record in common/catalog.py DOWNLOADS[{key!r}]: size={size}, sha256='{sha256}')")


def _content_range(header):
    """(first byte, total or None) from 'bytes a-b/total' or 'bytes */total'."""
    m = re.fullmatch(r'bytes (?:(\d+)-\d+|\*)/(\d+|\*)', (header or '').strip())
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != '*' else None
    return first, total


def _fetch_into(url, part, expected_size, timeout, progress):
    """Append the missing bytes of url to part (or start over); raise on a cut."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset >= expected_size:
        if offset == expected_size:
            return
        part.unlink()  # longer than the file: not a prefix of it
        offset = 0
    headers = {'User-Agent': USER_AGENT}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing after offset: either .part is whole or it is stale.
            _, total = _content_range(e.headers.get('Content-Range'))
            if total is None or total == offset:
                return
            part.unlink()
            return _fetch_into(url, part, expected_size, timeout, progress)
        raise
    with response:
        if offset and response.status == 206:
            first, total = _content_range(response.headers.get('Content-Range'))
            if first != offset:
                raise FetchError(f'{url}: asked to resume at byte {offset}, '
                                 f'server sent {response.headers.get("Content-Range")}')
            mode = 'ab'
        else:  # a full response (the server ignored Range, or a fresh start)
            length = response.headers.get('Content-Length')
            total = int(length) if length else None
            offset, mode = 0, 'wb'
        if expected_size is not None and total is not None and total != expected_size:
            raise VerificationError(f'{url}: server announces {total} bytes, '
                                    f'expected {expected_size}')
        received = offset
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit='B',
                                         unit_scale=True, unit_divisor=1024,
                                         desc=part.name[:-len('.part')],
                                         disable=None if progress else True,  # a bar on a terminal only
                                         mininterval=0.5) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise IncompleteDownload(f'connection closed at byte {received} of {total}')


def _checked(key, path, check):
    """Run `check` (path -> None, raising ValueError) on a file; a failure is
    a FetchError naming `key`."""
    if check is not None:
        try:
            check(path)
        except ValueError as e:
            raise VerificationError(f'{key}: {e}') from e


def unreachable(error):
    """Whether a urllib error says the host cannot be reached from here."""
    reason = getattr(error, 'reason', error)
    return isinstance(reason, socket.gaierror) or \
        isinstance(reason, OSError) and reason.errno in UNREACHABLE_ERRNOS


def elsewhere(key, source, url):
    """How to use a copy fetched on another machine: the --file option, the
    URL, and the checksum it must match."""
    digests = ', '.join(f'{name} {value}' for name, value in source.digests.items())
    return (f'to use a copy fetched elsewhere, download {url} and give it with --file {key}=PATH '
            + (f'(it must match {digests})' if digests else
               '(no checksum is recorded for it: it is checked as it is used)'))


def check_url(key, url):
    """A FetchError naming `url` if urllib cannot even make a request of it
    (no scheme, an unknown one, a malformed host); urllib says so with a
    ValueError."""
    try:
        parts = urllib.parse.urlsplit(url)
        urllib.request.Request(url)
    except ValueError as e:
        raise FetchError(f'{key}: {url}: not a URL urllib can fetch ({e})') from None
    if parts.scheme not in ('http', 'https', 'ftp', 'file'):
        raise FetchError(f'{key}: {url}: not a URL urllib can fetch (scheme {parts.scheme!r}; '
                         'http, https, ftp or file expected)')


def download(key, source, dest, url=None, retries=3, backoff=5.0, timeout=60, progress=True,
             check=None):
    """Download `source` (from `url`, e.g. a mirror, if given) to `dest`.

    A file already at `dest` is taken as is if it passes `check` (path ->
    None, raising ValueError: e.g. weights that must fit a net), else it is
    deleted and fetched again. Network failures are retried `retries` times,
    each resuming the .part file; if they persist, the .part file stays for
    the next run to resume. A file that fails verification or `check` is
    deleted (resuming it cannot repair it).
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _checked(key, dest, check)
        except VerificationError as e:
            print(f'{e}; deleting it and fetching it again', file=sys.stderr)
            dest.unlink()
        else:
            print(f'{key}: {dest} already present')
            return dest
    url = url or source.url
    check_url(key, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    print(f'{key}: {url} -> {dest}')
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, source.size, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            if e.code not in RETRY_STATUSES or attempt == retries:
                raise FetchError(f'{key}: {url}: HTTP {e.code} {e.reason}') from e
            failure = e
        except (OSError, http.client.HTTPException) as e:  # incl. URLError, timeouts
            if attempt == retries or unreachable(e):
                kept = part.stat().st_size if part.exists() else 0
                hint = (f'{kept} bytes kept in {part}, run the same command again to resume'
                        if kept else 'run the same command again to retry')
                raise FetchError(f'{key}: {url}: {e}; {hint}; '
                                 f'{elsewhere(key, source, url)}') from e
            failure = e
        print(f'{key}: {failure}; resuming in {backoff:g} s', file=sys.stderr)
        time.sleep(backoff)
    try:
        size, sha256 = verify(part, source)
        _checked(key, part, check)
    except VerificationError:
        part.unlink()
        raise
    os.replace(part, dest)
    _report(key, source, size, sha256)
    return dest


def adopt(key, source, path, dest=None, check=None):
    """Use a file the user already has: verify it (and `check` it, as
    download does), and copy it to `dest` if given. A file that fails is
    not copied (what `dest` held stays)."""
    path = Path(path)
    if not path.is_file():
        raise FetchError(f'{key}: no file {path}')
    size, sha256 = verify(path, source)
    _checked(key, path, check)
    _report(key, source, size, sha256)
    if dest is None or Path(dest).resolve() == path.resolve():
        return path
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with outputs.atomic_path(str(dest), f'{key}: the copy of {path}') as tmp:  # whole, or nothing
        shutil.copyfile(path, tmp)
    return dest
