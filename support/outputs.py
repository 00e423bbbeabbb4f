"""Where results are written: one guard for every output, files written whole, folders replaced whole.

    with outputs.staged(args.out, inputs=args.inputs, force=args.force) as tmp:
        write_everything_into(tmp)          # renamed to args.out only when this block succeeds
    outputs.write_atomic(path, text_or_bytes)

The rules every command that writes follows:
- An output is never an input, inside one, or holding one (compared as resolved paths), and
  never the current folder or one above it.
- A folder output that exists and is not empty is replaced only with --force, and --force only
  ever removes a folder this project wrote: one holding MARKER. Anything else is refused.
- A folder output is built in a hidden sibling `.NAME.partial-HOST-PID` and renamed into place when
  complete, so it always holds the files of one whole run (never stale ones of an earlier
  run), and a run that fails (a bad record, a full disk, Ctrl-C) leaves the previous output
  exactly as it was. It takes the room of both until the rename.
- Leftovers of a killed run (`.NAME.partial-*`, `.NAME.old-*`) are removed by the next run on
  the same machine that writes NAME, which says so; a previous output caught
  between the two renames of a replacement is put back.
- --force replaces only an earlier output of the same step (the marker names it), and never a
  mount point (it cannot be renamed; write into a folder inside it).
"""
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

MARKER = ".redwhale-output.json"


class Refused(ValueError):
    """An output this guard will not write (the message names the flag and the folder)."""


def check_not_input(out, inputs, flag="--out"):
    """Refuse an output that is, contains or is inside one of `inputs` (files or folders)."""
    o = Path(out).resolve()
    here = Path.cwd().resolve()
    if o == here or o in here.parents:
        raise Refused(f"{flag} {out} is the current folder or holds it: choose a new folder below it")
    for i in filter(None, inputs):
        p = Path(i).resolve()
        if o == p:
            raise Refused(f"{flag} {out} is the input {i}: choose another {flag}")
        if p in o.parents:
            raise Refused(f"{flag} {out} is inside the input folder {i}: choose another {flag}")
        if o in p.parents:
            raise Refused(f"{flag} {out} holds the input {i}: choose another {flag}")


def ours(folder):
    return (Path(folder) / MARKER).is_file()


def written_by(folder):
    """The step that wrote this folder ("" when unknown)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("step", "")
    except (OSError, ValueError, AttributeError):
        return ""


def check_output_dir(out, inputs=(), force=False, flag="--out", step=""):
    """Everything that must hold before a folder output is written; nothing is touched here."""
    out = Path(out)
    check_not_input(out, inputs, flag)
    if out.exists() and not out.is_dir():
        raise Refused(f"{flag} {out} is a file, not a folder: choose another {flag}")
    if out.is_dir() and os.path.ismount(out):     # it cannot be renamed away: say so before the work
        raise Refused(f"{flag} {out} is a mount point, which cannot be replaced as a whole: give a folder inside it")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise Refused(f"{flag} {out} already exists and is not empty; pass --force to replace it, "
                             f"or choose another {flag}")
        if not ours(out):
            raise Refused(f"{flag} {out} was not written by this project (it has no {MARKER}); --force only "
                             "replaces this project's outputs: move it away yourself, or choose another "
                             f"{flag}")
        if step and written_by(out) not in ("", step):
            raise Refused(f"{flag} {out} holds the output of another step ({written_by(out)}), not of "
                             f"{step}; --force only replaces an earlier output of the same step")


def mark(folder, step):
    """Write MARKER: this folder is a redwhale output, and --force may replace it."""
    write_atomic(Path(folder) / MARKER, json.dumps({"written_by": "redwhale-ref", "step": step,
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def _alive(pid):
    try:
        os.kill(pid, 0)             # signal 0: nothing is sent, the PID is only looked up
    except OSError as e:            # no such process; or one that is alive but not ours to signal
        return not isinstance(e, ProcessLookupError)
    return True


def _tag():
    """HOST-PID: whose a hidden folder is (on shared storage another node's PID means nothing here)."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"     # the last "-" ends the host


def sweep_leftovers(out):
    """Clean up what a killed run of this machine left beside `out`; say so. A `.NAME.old-*` with
    no `out` beside it is the previous output, caught between two renames: it is put back."""
    out = Path(out)
    for kind in ("old", "partial"):         # (a missing parent folder globs to nothing)
        for d in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            host, _, pid = d.name.split(f".{kind}-", 1)[1].rpartition("-")
            mine = host == _tag().rpartition("-")[0] and pid.isdigit() and not _alive(int(pid))
            if not d.is_dir() or not mine or not (ours(d) or not any(d.iterdir())):
                continue
            if kind == "old" and not out.exists():
                os.replace(d, out)
                print(f"note: restored {out} from {d}, left by an interrupted run", file=sys.stderr)
                continue
            shutil.rmtree(d)
            print(f"note: removed {d}, left by an interrupted run", file=sys.stderr)


def fsync(path):
    """Flush a file or a folder (its list of names) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp, out, durable=False):
    """Rename the finished folder `tmp` to `out`; an existing `out` goes away only after. With
    `durable`, every file and the folder reach the disk before the rename, and the rename after
    it (a checkpoint must survive a power cut, not only a crash)."""
    tmp, out = Path(tmp), Path(out)
    if durable:
        for f in [*sorted(tmp.iterdir()), tmp]:        # every file, then the folder's list of names
            fsync(f)
    old = out.parent / f".{out.name}.old-{_tag()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if durable:
        fsync(out.parent)
    shutil.rmtree(old, ignore_errors=True)     # the new folder is in place: a stray old one is no error


@contextmanager
def staged(out, inputs=(), force=False, step="", flag="--out"):
    """Yield a fresh hidden sibling folder of `out`; when the block succeeds it becomes `out`."""
    given, out = out, Path(out).resolve()
    sweep_leftovers(out)            # first: it may put back a previous output caught between renames
    check_output_dir(given, inputs, force, flag, step)      # (messages name the folder as the user did)
    tmp = out.parent / f".{out.name}.partial-{_tag()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:            # a read-only or missing place: name the flag, not the hidden folder
        raise OSError(f"{flag} {out}: cannot write there ({e.strerror or e})") from None
    try:
        mark(tmp, step)             # first, so that a leftover of a kill is recognizably ours
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(path, inputs=(), force=False, flag="--output", ours=None):
    """A file output: not an input nor inside an input folder. An existing file is replaced when
    `ours(path)` recognizes it as one this project wrote, or with --force (you named the file)."""
    path = Path(path)
    check_not_input(path, inputs, flag)
    if path.is_dir():
        raise Refused(f"{flag} {path} is a folder, not a file")
    if path.exists() and not force and not (ours and ours(path)):
        raise Refused(f"{flag} {path} already exists and is not an output of this step; pass --force to "
                         f"replace it, or choose another {flag}")


def json_with(*keys):
    """An `ours` for check_output_file: the file is JSON (JSON Lines for .jsonl) whose records (a
    list's items, or the one object) all have `keys`, as this step writes them."""
    def ours(path):
        try:
            with open(path, encoding="utf-8") as f:
                lines = str(path).endswith(".jsonl")
                rows = [json.loads(line) for line in f if line.strip()] if lines else json.load(f)
            rows = rows if isinstance(rows, list) else [rows]
            return bool(rows) and all(isinstance(r, dict) and set(keys) <= set(r) for r in rows)
        except (OSError, ValueError):
            return False
    return ours


def write_atomic(path, data):
    """Write `data` (str or bytes) to a temp file beside `path`, fsync it, rename it into place:
    a reader never sees half a file, and a failure leaves the previous file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
