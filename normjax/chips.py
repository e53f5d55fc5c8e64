"""The chips `normjax plan` compiles for without having them: their published peak numbers, and
compile-only devices of each (XLA compiles for a chip that is not there).

TPU targets come from libtpu (`pip install 'normjax[plan-tpu]'`, what `jax[tpu]` installs): a
topology such as `v5e:2x4` gives its chips as compile-only devices. GPU targets come from the CUDA
plugin (`pip install 'normjax[plan-gpu]'`, what `jax[cuda12]` installs) and a description of the
GPU (`GpuTargetConfigProto` text, written here from the chip's published facts), the way XLA's own
`xla/tools/hlo_opt/gpu_specs/*.txtpb` describe GPUs for deviceless compiles.

Peak numbers are per chip, dense (no sparsity), from the vendors' pages named in `Chip.source`:
for TPUs the bf16 peak (XLA runs float32 matmuls and convs on TPU at bf16 precision by default),
for GPUs the bf16 tensor-core peak for bfloat16 programs and the TF32 one for float32 programs
(XLA's default precision lets float32 matmuls and convs use TF32 on GPUs since Ampere).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from normjax.errors import UserError

INSTALL = {
    "tpu": "pip install 'normjax[plan-tpu]' (libtpu, as jax[tpu] installs it), or make plan (into .plan-site/tpu)",
    "gpu": "pip install 'normjax[plan-gpu]' (the CUDA 12 plugin and its CUDA libraries, as jax[cuda12] installs them), "
    "or make plan TARGET=h100 (into .plan-site/gpu)",
}
# jax's own extras that carry each family's compiler, matched to the installed jax.
JAX_EXTRA = {"tpu": "tpu", "gpu": "cuda12"}
TPU_DOCS = "Google Cloud TPU documentation, cloud.google.com/tpu/docs/{} (system architecture table)"


@dataclasses.dataclass(frozen=True)
class Chip:
    """One compile target: a TPU slice or one GPU.

    Attributes:
      name: what `--target` takes, e.g. `tpu-v5e-8`, `h100`.
      family: `tpu` or `gpu`.
      kind: the chip, as people name it.
      devices: chips in the target (a run is data-parallel over all of them).
      topology: libtpu's topology (`v5e:2x4`); `1x1x1` for a GPU.
      peak_bf16: dense bf16 FLOP/s per chip.
      peak_f32: dense FLOP/s per chip that float32 matmuls and convs reach (TPU: bf16 passes; GPU: TF32).
      bandwidth: HBM bytes/s per chip.
      memory: HBM bytes per chip.
      usable: the share of `memory` a JAX process allocates from (GPU: XLA's client preallocates
        75% by default, `XLA_PYTHON_CLIENT_MEM_FRACTION`).
      source: where the peak numbers are published.
      gpu: a GPU's device facts for its target description (`gpu_target_config`).
    """

    name: str
    family: str
    kind: str
    devices: int
    topology: str
    peak_bf16: float
    peak_f32: float
    bandwidth: float
    memory: int
    usable: float
    source: str
    gpu: tuple = ()


def _tpu(name: str, version: str, topology: str, devices: int, bf16: float, bw: float, mem: float) -> Chip:
    return Chip(
        f"tpu-{version}-{devices}",
        "tpu",
        f"TPU {version}",
        devices,
        f"{version}:{topology}",
        bf16,
        bf16,
        bw,
        int(mem),
        1.0,
        TPU_DOCS.format(name),
    )


# TPU v5e: 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s per chip (docs page "v5e").
# TPU v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s per chip (docs page "v4"); a v4-N slice
# counts TensorCores, two per chip: v4-8 is 4 chips.
# TPU v6e (Trillium): 918 TFLOP/s bf16, 32 GB HBM at 1640 GB/s per chip (docs page "v6e").
# TPU v5p: 459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s per chip (docs page "v5p"); v5p-N counts
# TensorCores too.
_V5E = dict(name="v5e", version="v5e", bf16=197e12, bw=819e9, mem=16e9)
_V4 = dict(name="v4", version="v4", bf16=275e12, bw=1200e9, mem=32 * 2**30)
_V6E = dict(name="v6e", version="v6e", bf16=918e12, bw=1640e9, mem=32e9)
_V5P = dict(name="v5p", version="v5p", bf16=459e12, bw=2765e9, mem=95e9)


def _tpus() -> list[Chip]:
    out = []
    for spec, shapes in (
        (_V5E, {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4"}),
        (_V6E, {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4"}),
    ):
        out += [_tpu(topology=t, devices=n, **spec) for n, t in shapes.items()]
    for cores, t in {8: "2x2x1", 16: "2x2x2", 32: "2x2x4"}.items():
        # libtpu's v4 topology holds one device per TensorCore (not one per chip, "megacore", as
        # JAX on a v4 VM): each has half the chip's peak, bandwidth and HBM.
        half = dict(_V4, bf16=_V4["bf16"] / 2, bw=_V4["bw"] / 2, mem=_V4["mem"] / 2)
        chip = _tpu(topology=t, devices=cores, **half)
        out.append(dataclasses.replace(chip, name=f"tpu-v4-{cores}", kind="TPU v4 TensorCore"))
    for cores, t in {8: "2x2x1", 16: "2x2x2"}.items():  # named by TensorCores, two per (megacore) chip
        out.append(dataclasses.replace(_tpu(topology=t, devices=cores // 2, **_V5P), name=f"tpu-v5p-{cores}"))
    return out


# GPU device facts for the target description: SMs, compute capability, clock (GHz), L2 bytes,
# shared memory per SM and per block (opt-in), from NVIDIA's datasheets and the CUDA programming
# guide's table of compute capabilities.
_HOPPER = {"core_count": 132, "cc": (9, 0), "clock_rate_ghz": 1.98, "l2_cache_size": 50 * 2**20,
           "shared_memory_per_core": 228 * 1024, "shared_memory_per_block_optin": 227 * 1024}  # fmt: skip
_AMPERE = {"core_count": 108, "cc": (8, 0), "clock_rate_ghz": 1.41, "l2_cache_size": 40 * 2**20,
           "shared_memory_per_core": 164 * 1024, "shared_memory_per_block_optin": 163 * 1024}  # fmt: skip

# name, device name, dense bf16 and TF32 FLOP/s, HBM bytes/s and bytes, facts, datasheet (NVIDIA's
# tables give the tensor-core peaks with sparsity, twice the dense ones used here):
# H100 SXM5 80 GB: TF32 989 / BF16 1979 TFLOP/s with sparsity, 3.35 TB/s.
# H200 SXM 141 GB: the H100's compute, HBM3e at 4.8 TB/s.
# A100 SXM4 80 GB: TF32 312 / BF16 624 TFLOP/s with sparsity, 2039 GB/s.
_GPU_TABLE = (
    ("h100", "NVIDIA H100 80GB HBM3", 989.5e12, 494.7e12, 3.35e12, 80e9, _HOPPER, "H100 Tensor Core GPU, H100 SXM"),
    ("h200", "NVIDIA H200", 989.5e12, 494.7e12, 4.8e12, 141e9, _HOPPER, "H200 Tensor Core GPU, H200 SXM"),
    ("a100", "NVIDIA A100-SXM4-80GB", 312e12, 156e12, 2.039e12, 80e9, _AMPERE, "A100 Tensor Core GPU, 80GB SXM"),
)
GPUS = [Chip(n, "gpu", k, 1, "1x1x1", bf, tf, bw, int(m), 0.75, f"NVIDIA datasheet: {d}", tuple(f.items()))
        for n, k, bf, tf, bw, m, f, d in _GPU_TABLE]  # fmt: skip

CHIPS: dict[str, Chip] = {c.name: c for c in _tpus() + GPUS}


def chip(name: str) -> Chip:
    """The target named `name`, or a one-line UserError listing the known ones.

    Example:
      >>> chip("tpu-v5e-8").topology, chip("tpu-v4-8").devices
      ('v5e:2x4', 8)
    """
    if name not in CHIPS:
        raise UserError(f"--target {name!r} is unknown; allowed: {', '.join(CHIPS)}")
    return CHIPS[name]


def installed(family: str) -> bool:
    """Whether what compiles for `family` (`tpu`: libtpu; `gpu`: the CUDA 12 plugin) is importable.

    Example:
      >>> installed("tpu") in (True, False)
      True
    """
    module = {"tpu": "libtpu", "gpu": "jax_cuda12_plugin"}[family]
    return importlib.util.find_spec(module) is not None


def requirements(family: str) -> list[str]:
    """What `jax[tpu]` or `jax[cuda12]` adds to the installed jax for `family`, as pip
    requirements (`make plan` installs them outside the venv, into `.plan-site/FAMILY`).

    Example:
      >>> any(r.startswith("libtpu") for r in requirements("tpu"))
      True
    """
    from importlib import metadata

    extra = f'extra == "{JAX_EXTRA[family]}"'
    out = []
    for r in metadata.requires("jax") or ():
        name, _, marker = r.partition(";")
        if extra in marker and not name.strip().startswith(("jaxlib", "requests")):
            out.append(name.strip())
    return out


def require(c: Chip) -> None:
    """A one-line UserError naming the install command when `c`'s compiler is not installed."""
    if not installed(c.family):
        raise UserError(
            f"--target {c.name} compiles with {c.family.upper()} support, not installed: {INSTALL[c.family]}"
        )


def gpu_target_config(c: Chip) -> str:
    """`c`'s description as XLA's `GpuTargetConfigProto` text (what a deviceless GPU compile reads).

    Example:
      >>> "core_count: 132" in gpu_target_config(chip("h100"))
      True
    """
    facts = dict(c.gpu)
    major, minor = facts.pop("cc")
    info = {
        "threads_per_block_limit": 1024,
        "threads_per_warp": 32,
        "shared_memory_per_block": 48 * 1024,
        "threads_per_core_limit": 2048,
        "fpus_per_core": 64 if major == 8 else 128,
        "block_dim_limit_x": 2**31 - 1,
        "block_dim_limit_y": 65535,
        "block_dim_limit_z": 65535,
        "memory_bandwidth": int(c.bandwidth),
        "device_memory_size": c.memory,
        "registers_per_core_limit": 65536,
        "registers_per_block_limit": 65536,
        **facts,
    }
    lines = [f"  {k}: {v}" for k, v in info.items()]
    lines.append(f"  cuda_compute_capability {{ major: {major} minor: {minor} }}")
    return (
        "gpu_device_info {\n" + "\n".join(lines) + f'\n}}\nplatform_name: "CUDA"\ndevice_description_str: "{c.kind}"\n'
    )


def _quiet_libtpu() -> None:
    """Without TPU chips here, libtpu warns at start-up that it cannot find them (the TPU VM's
    metadata it reads is absent); it needs none of that to compile, so name this host a single
    worker. Left alone where a variable is already set or a TPU is attached."""
    try:
        from jax._src import hardware_utils

        attached = hardware_utils.num_available_tpu_chips_and_device_id()[0]
    except Exception:  # noqa: BLE001 - a private helper of jax; if it moved, leave the warnings
        return
    if not attached:
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")


def compile_devices(c: Chip) -> list:
    """Compile-only devices of target `c` (nothing runs on them; `jit(...).lower(...).compile()` works).

    Raises:
      UserError: (one line) the target's compiler is not installed.
    """
    require(c)
    from jax.experimental import topologies

    if c.family == "tpu":
        _quiet_libtpu()
        kwargs = {"chips_per_host_bounds": (1, 1, 1)} if c.devices == 1 else {}
        devices = list(topologies.get_topology_desc(c.topology, platform="tpu", **kwargs).devices)
        if len(devices) != c.devices:  # another libtpu counting otherwise: the peaks would be wrong
            raise UserError(f"--target {c.name}: libtpu gives {len(devices)} devices for {c.topology}, not {c.devices}")
        return devices
    # Without a GPU here the plugin's check of the CUDA driver fails and the plugin stays
    # unregistered; a compile needs no driver. Read once, when JAX first looks for plugins.
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=gpu_target_config(c), topology=c.topology
        )
    except NotImplementedError:
        raise UserError(
            f"--target {c.name}: the CUDA plugin is installed but did not load (JAX started before it was "
            "asked for, without a GPU here); start Python with JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1"
        ) from None
    return list(topology.devices)
