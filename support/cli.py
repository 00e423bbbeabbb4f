"""What every command line here shares: numeric flags checked up front, one line per mistake.

    p.add_argument("--limit", type=cli.number(int, lo=0), default=0)    # argparse names the flag
    cli.check("stage 2 lr", 1e-4, float, lo=0, lo_open=True)           # recipe fields, config keys
    if __name__ == "__main__":
        cli.run(main)

A user's ordinary mistake (a flag out of range, a missing or corrupt file, an output that
would overwrite an input) ends the command with exit code 1 and one line, `error: ...`,
that names the flag, file, line or key; REDWHALE_DEBUG=1 shows the traceback instead.
Under torchrun a mistake every rank makes alike (a UserError: the same flags, the same files, or
rank 0's error relayed) is printed by rank 0 alone, not N times; any other error (a CUDA out of
memory, a NCCL or disk error) by every rank it happens on, prefixed with the rank (and the host
when the job spans nodes), so a failure on rank 5 never exits in silence.
"""
import argparse
import os
import socket
import sys
import time

# what an ordinary mistake raises: a missing or unreadable file (OSError), a bad value
# (ValueError, which readers.DataError is), a missing key, and torch's own complaints
USER_ERRORS = (OSError, ValueError, KeyError, RuntimeError, MemoryError)


class UserError(ValueError):
    """A mistake the message fully explains (a flag, a file, a recipe key): library code raises it,
    the command prints it as one line. Passed between ranks as it is, never re-labelled."""


def problem(value, kind=float, lo=None, hi=None, lo_open=False, hi_open=False):
    """None when `value` is a `kind` within the range, else what it should be."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    ok = ok and value == value and (lo is None or value > lo or (value == lo and not lo_open))
    ok = ok and (hi is None or value < hi or (value == hi and not hi_open))
    if ok:
        return None
    what = "must be an integer" if kind is int else "must be a number"
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {lo}"
    return f"{what} {'<' if hi_open else '<='} {hi}" if hi is not None else what


def check(name, value, kind=float, lo=None, hi=None, lo_open=False, hi_open=False):
    """Raise ValueError('NAME must be ..., got VALUE') unless value is in range."""
    why = problem(value, kind, lo, hi, lo_open, hi_open)
    if why:
        raise ValueError(f"{name} {why}, got {value!r}")
    return kind(value)


def number(kind=int, lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse `type` that parses int or float and checks the range: a bad value is
    argparse's usual one-line error, `argument --limit: must be an integer >= 0, got '-1'`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None                # not a number at all: problem() says what it must be
        why = problem(value, kind, lo, hi, lo_open, hi_open)
        if why:
            raise argparse.ArgumentTypeError(f"{why}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_force(p):
    p.add_argument("--force", action="store_true",
                   help="replace an existing output folder; only one this project wrote is ever removed")


def fail(message, code=1, every_rank=False):
    """Print `error: message` and exit: under torchrun on rank 0 alone, or with every_rank on this
    rank too, prefixed `rank R` (`rank R on HOST` when the job spans nodes)."""
    rank, world = int(os.environ.get("RANK", "0")), os.environ.get("WORLD_SIZE", "1")
    message = message.removeprefix("error: ")
    if every_rank and world != "1":
        host = f" on {socket.gethostname()}" if os.environ.get("LOCAL_WORLD_SIZE", world) != world else ""
        message = f"rank {rank}{host}: {message}"
    if rank == 0 or (every_rank and world != "1"):
        print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(main, argv=None):
    """Call main(argv); turn an ordinary mistake into one line and a non-zero exit code."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except USER_ERRORS as e:
        if os.environ.get("REDWHALE_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e) or type(e).__name__
        if isinstance(e, MemoryError):
            msg = f"out of memory ({msg})"
        msg = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
        fail(msg, every_rank=not isinstance(e, UserError))
    except SystemExit as e:     # SystemExit("error: ...") raised on purpose: print it once
        if isinstance(e.code, str):
            fail(e.code)
        raise
    sys.exit(code if isinstance(code, int) else 0)     # a main may return its result instead


class _Lines:
    """A progress bar for logs: when stderr is not a terminal (CI, nohup, a file), one short line
    every `every` of the total (or every minute when the total is unknown), not a \\r per update."""

    def __init__(self, iterable=None, total=None, desc="", initial=0, every=0.1, unit="it", **_):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.n, self.unit = iterable, total, desc, initial, unit.strip()
        self.step, self.t0, self.last, self.postfix = (total * every if total else None), time.time(), initial, ""

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)

    def update(self, k=1):
        self.n += k
        due = (self.n - self.last >= self.step) if self.step else (time.time() - self.t0 >= 60 * (self.last + 1))
        if due:
            self.last = self.n if self.step else self.last + 1
            self._line()

    def _line(self):
        pct = f" {100 * self.n / self.total:3.0f}%" if self.total else ""
        print(f"{self.desc}:{pct} {self.n:,}{'/' + format(self.total, ',') if self.total else ''} {self.unit} "
              f"{time.time() - self.t0:.0f}s {self.postfix}".rstrip(), file=sys.stderr, flush=True)

    def set_postfix(self, d=None, refresh=True, **kw):
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(d or {}), **kw}.items())

    def close(self):
        if self.n != self.last:          # the end, when the last step did not print it
            self.last = self.n
            self._line()


def progress(iterable=None, *, disable=False, **kw):
    """tqdm on a terminal; compact lines (every 10%) when stderr is a log; nothing when disabled."""
    if disable or sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(iterable, disable=disable, dynamic_ncols=True, **kw)
    return _Lines(iterable, **kw)


def write(msg):
    """Print a line without breaking a tqdm bar on a terminal."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        tqdm.write(msg)
    else:
        print(msg, flush=True)
