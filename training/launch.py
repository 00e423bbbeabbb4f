"""train.py on N processes of this machine, as `torchrun --standalone --nproc_per_node=N train.py`
does it: the one launcher `redwhale.py train --nproc N` and the demo share. torchrun runs in this
process, so a rank's failure ends as one line here instead of torchrun's own traceback (the rank
has printed what went wrong). Its workers get SHUTDOWN_TIMEOUT s between SIGTERM and SIGKILL to
write a checkpoint (torchrun's default is 30; TORCH_ELASTIC_SHUTDOWN_TIMEOUT overrides; a torch
whose torchrun lacks --shutdown-timeout keeps 30). One process needs no launcher: call train.main.

    python redwhale.py train --nproc 2 --init-from DIR --data DIR --out runs/x
"""
import os
from pathlib import Path

from support.cli import UserError

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
SHUTDOWN_TIMEOUT = 900   # s: a SOLAR-size checkpoint takes minutes (training/checkpoint.py)


def torchrun(argv, nproc, threads=None):
    """Run train.py with argv on nproc local processes (gloo on CPU, NCCL on CUDA); threads: the
    OMP_NUM_THREADS each process gets (CPU runs share the cores)."""
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    old = os.environ.get("OMP_NUM_THREADS")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)     # the workers inherit this environment
    try:
        args = run.parse_args(["--standalone", f"--nproc_per_node={nproc}", str(TRAIN_PY), *map(str, argv)])
        if getattr(args, "shutdown_timeout", 0) is None:     # None: has the option, PET_SHUTDOWN_TIMEOUT unset
            args.shutdown_timeout = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT))
        run.run(args)
    except SignalException as e:     # torchrun passed SIGTERM / Ctrl-C on; rank 0 said where it stopped
        raise SystemExit(128 + e.sigval) from None
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise UserError(f"training stopped: rank {rank} exited with code {failure.exitcode} "
                        "(its error is printed above)") from None
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
