"""How train.py runs the model: device, precision, attention kernel, compile, process groups.

Every choice is a flag, and every branch runs on CPU as well as on CUDA, so the CPU tests walk
the GPU's code path (torch 2.13 has a CPU flash-attention kernel, bf16 autocast and
torch.compile on CPU): --dtype bf16 (autocast; fp32 master weights, frozen ones in 16 bits:
weight_dtypes), --sdpa (the attention backend, on either device: attention, check_attention),
--compile (each decoder block, as torchtitan does: one graph every layer reuses, rebuilt each
stage: compile_blocks). A combination that cannot work (efficient attention on CPU, flash in
fp32 on CUDA) is found by a tiny probe before the model is loaded and reported as one line.

    python -c "from training import runtime; print(runtime.peak_tflops('NVIDIA H100 PCIe'))"
"""
import contextlib
import datetime
import functools
import logging
import os
import resource
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from support import cli
from support.cli import UserError

SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION}

# Dense bf16 tensor-core peak per GPU in TFLOPS (NVIDIA data sheets; the "with sparsity" figures
# are twice these). The PCIe and NVL boards run at lower clocks and power than the SXM ones, so
# they must be matched before the bare names. Unknown GPUs get no MFU unless --peak-tflops says.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
               ("H800", 989.0), ("GH200", 989.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
               ("B200", 2250.0)]


@dataclass
class Env:
    """Where and how this process trains: its device and place in the job, and the precision and
    kernels every forward runs with."""
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    distributed: bool = False     # under torchrun: a process group (gloo on CPU, NCCL on CUDA)
    dtype: str = "fp32"           # "bf16": autocast, trained weights fp32, frozen ones stored bf16
    sdpa: str = "flash"
    compile: bool = False         # torch.compile each decoder block
    checkpointing: bool = False   # activation checkpointing: recompute each layer in backward

    @property
    def mixed(self):
        return self.dtype == "bf16"

    @property
    def master(self):
        return self.rank == 0

    @contextlib.contextmanager
    def compute(self):
        """Autocast and the attention backend, built fresh each time they are entered."""
        with autocast(self.device, self.dtype), attention(self.sdpa):
            yield

    def set_checkpointing(self, model):
        """Activation checkpointing as the flag says, each recompute under this run's attention kernel."""
        model.gradient_checkpointing = self.checkpointing
        model.recompute_context = functools.partial(attention, self.sdpa)

    def log(self, msg):
        if self.master:
            cli.write(msg)              # prints above a progress bar instead of through it

    def note_uncompiled(self, where):
        """Say so when torch.compile gave up on a block: past its recompile limit dynamo runs the
        block eager from then on (slower, the same numbers), with nothing but a warning of its own."""
        if self.compile and GAVE_UP.hits:
            self.log(f"warning: {where}: torch.compile hit its recompile limit {GAVE_UP.hits} time(s), so "
                     "some decoder blocks run uncompiled (TORCH_LOGS=recompiles says why)")
            GAVE_UP.hits = 0


def start(args):
    """The Env of this process: the device (cuda:LOCAL_RANK under torchrun), and the process
    groups when torchrun started it: training's (--dist-timeout) and the I/O waits' (--io-timeout)."""
    distributed = "RANK" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(args.device, distributed, local_rank)
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=args.dist_timeout))
        init_io(args.io_timeout)
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type != "cuda":
            set_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    compiled = args.compile if args.compile is not None else device.type == "cuda"
    return Env(device, rank, world, local_rank, distributed, compute_dtype(args.dtype, device), args.sdpa,
               compiled, args.activation_checkpointing)


IO = IO_TIMEOUT = None     # the gloo group for waits on reads and writes (init_io), and its timeout


def init_io(minutes):
    """Two timeouts: training collectives fail after --dist-timeout (a dead or hung rank is found
    in minutes), while waits on reading and writing tens of GB (rank 0's loads, checkpoints, the
    export) use this group, which waits up to --io-timeout."""
    global IO, IO_TIMEOUT
    IO_TIMEOUT = datetime.timedelta(minutes=minutes)
    IO = new_io_group()


def new_io_group():
    return dist.new_group(backend="gloo", timeout=IO_TIMEOUT)


def peak_tflops(device_name):
    return next((v for k, v in PEAK_TFLOPS if k in device_name), None)


def check_device(arg):
    """cpu, cuda or cuda:N, and cuda only where torch sees a GPU: one line otherwise."""
    if not (arg in ("cpu", "cuda") or (arg.startswith("cuda:") and arg[5:].isdigit())):
        raise UserError(f"--device {arg!r}: give cpu, cuda or cuda:N")
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device (a CPU build of torch?)")
    return arg


def pick_device(arg, distributed, local_rank):
    """--device cpu or cuda (default: cuda when available); cuda:LOCAL_RANK under torchrun."""
    if arg:
        check_device(arg)
    if arg == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    dev = torch.device("cuda", local_rank if distributed else 0)
    torch.cuda.set_device(dev)
    return dev


def compute_dtype(arg, device):
    """'bf16' or 'fp32' after resolving auto for this device."""
    if arg == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if arg == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--dtype bf16, but this GPU has no bf16 support (pre-Ampere): use --dtype fp32")
    return arg


def autocast(device, dtype):
    """A fresh autocast context (bf16) or a no-op (fp32): build one where you enter it."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def attention(kind):
    """A fresh sdpa_kernel context for --sdpa. It must be built where it is entered: the object
    sdpa_kernel returns is single-use (entering it twice raises AttributeError '...args')."""
    if kind == "auto":
        return contextlib.nullcontext()
    return sdpa_kernel([SDPA_BACKENDS[kind]])


def check_attention(kind, device, dtype, cfg):
    """Run one tiny causal GQA attention forward + backward with the model's head layout under the
    chosen backend, before anything is loaded; a backend that cannot take it is one clear line."""
    if kind == "auto":
        return
    if kind == "efficient" and device.type == "cpu":
        raise UserError("--sdpa efficient has no CPU kernel; use --sdpa flash (CPU has one) or math")
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, H, 8, D, device=device, dtype=dt, generator=g, requires_grad=True)
    k, v = (torch.randn(1, KV, 8, D, device=device, dtype=dt, generator=g, requires_grad=True) for _ in range(2))
    try:
        with attention(kind):
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H).sum().backward()
    except RuntimeError as e:
        why = str(e).strip().splitlines()[0][:200]
        raise UserError(f"--sdpa {kind} cannot run on {device.type} in {dtype} with {H}/{KV} heads of "
                         f"dim {D} ({why}); use --sdpa auto, or --dtype bf16 on CUDA") from None


def weight_dtypes(cfg, mixed):
    """(dtype the base is read in, dtype frozen weights are stored in). The base is read in its own
    dtype (config torch_dtype), so fp32 master weights start from the original values. Under bf16
    autocast frozen weights keep a 16-bit base's own dtype (SOLAR's fp16 is never rounded to
    bf16; weights a recipe never trains come out bit-identical), an fp32 base's go to bf16."""
    base = getattr(torch, cfg.torch_dtype, None)
    base = base if base in (torch.float16, torch.bfloat16) else torch.float32
    return base, (torch.bfloat16 if base == torch.float32 else base) if mixed else torch.float32


def storage_dtype(trained, frozen):
    """Trained parameters in fp32 (the master weights AdamW updates), frozen ones in `frozen`."""
    return torch.float32 if trained else frozen


def storage_dtypes(model, trained, frozen):
    """Every parameter in its storage_dtype, set at every stage start (a checkpoint is loaded into
    the dtypes it was saved in: checkpoint.load_exact)."""
    for n, p in model.named_parameters():
        want = storage_dtype(n in trained, frozen)
        if p.dtype != want:
            p.data = p.data.to(want)


class _GaveUp(logging.Handler):
    """Counts dynamo's 'hit config.recompile_limit' warnings (Env.note_uncompiled reports them)."""
    hits = 0

    def emit(self, record):
        self.hits += "recompile_limit" in record.getMessage()


GAVE_UP = _GaveUp(logging.WARNING)


def compile_blocks(model):
    """torch.compile every decoder block in place (keys keep their HF names, no _orig_mod.).
    Dynamo's cache is reset first: a new stage has new trainable parameters and, for LoRA, new
    modules, and every block shares one code object whose recompile budget is small (train, eval
    and trained/frozen layers are a few entries of it; tests/test_train_gpu_paths.py counts them)."""
    torch._dynamo.reset()
    if GAVE_UP not in logging.getLogger("torch._dynamo").handlers:
        logging.getLogger("torch._dynamo").addHandler(GAVE_UP)
    for layer in model.model.layers:
        layer.compile()


def set_cpu_threads(local_world_size):
    """Share the cores between the local ranks instead of oversubscribing them (CPU runs)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world_size)))


def peak_memory_bytes(device):
    """Peak memory of this process on its device: CUDA's allocator peak (reset at each stage), or
    the CPU process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return cpu_peak_bytes()


def cpu_peak_bytes():
    """Peak RSS of this process: /proc's VmHWM (ru_maxrss would start at a forking parent's RSS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
