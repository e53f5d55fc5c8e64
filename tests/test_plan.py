"""`normjax plan` and group sizing by compiled memory.

The whole report is checked on this host's CPU posing as a target (`slow`: `make test-slow`).

The compile tests (one per target family: a smoke program compiled for a TPU slice and for an
H100, with no such chip here) need the `plan-tpu` / `plan-gpu` extras: they are marked `plan`
(`make test-plan` runs them, `make test` does not) and skip, naming the install command, where
the extra is not installed.
"""

import json
import os

import jax
import pytest

from normjax import chips, cli
from normjax.config import load_config
from normjax.errors import UserError
from normjax.parallel import compile_for, data_mesh, platform
from normjax.sweep import plan as plan_lib
from normjax.sweep import runner
from normjax.sweep.runner import auto_group_size
from normjax.sweep.sizing import HEADROOM, GroupCompiler, device_bytes, largest_group
from normjax.training.inputs import input_for
from normjax.training.loop import program_for

SMOKE = "experiments/mlp_digits.py"
# A small program compiles in seconds: two layers, one step per dispatch, no metric hooks.
SMALL = ["model.depth=2", "model.width=16", "train.steps_per_dispatch=1", "log.metrics=[]"]
SETS = [a for s in SMALL for a in ("--set", s)]


def _needs(family: str):
    return pytest.mark.skipif(
        not chips.installed(family), reason=f"the {family} compile extra is not installed: {chips.INSTALL[family]}"
    )


def test_unknown_target_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", SMOKE, "--target", "tpu-v9-8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: --target 'tpu-v9-8' is unknown; allowed: tpu-v5e-1,") and "h100" in err


@pytest.mark.parametrize("target", ["tpu-v5e-8", "h100"])
def test_missing_extra_names_the_install_command(monkeypatch, capsys, target):
    monkeypatch.setattr(chips, "installed", lambda family: False)
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", SMOKE, "--target", target])
    err = capsys.readouterr().err
    family = chips.chip(target).family
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"pip install 'normjax[plan-{family}]'" in err


def test_chip_table_names_its_sources():
    for c in chips.CHIPS.values():
        assert c.source and c.peak_bf16 >= c.peak_f32 > 0 and c.bandwidth > 0 and c.memory > 0
        assert c.family == "tpu" or (c.devices == 1 and "core_count: " in chips.gpu_target_config(c))
    assert chips.chip("tpu-v4-8").devices == 8 and chips.chip("tpu-v5e-8").devices == 8


def test_largest_group_checks_what_it_extrapolates():
    seen = []

    def memory(r):  # grows faster than linearly past 4 runs: the extrapolation overshoots
        seen.append(r)
        return 100 + 10 * r + (50 * (r - 4) if r > 4 else 0)

    size = largest_group(memory, n_runs=64, limit=300)
    assert memory(size) <= 300 < memory(size + 1)
    assert largest_group(lambda r: 100 * r, n_runs=1, limit=1000) == 1
    assert largest_group(lambda r: 100 * r, n_runs=8, limit=150) == 1
    assert largest_group(lambda r: 100 * r, n_runs=8, limit=50) == 0


def test_bound_and_kernel_launches():
    assert plan_lib.bound_seconds(1e12, 1e12, peak=1e15, bandwidth=1e12) == 1.0
    assert plan_lib.bound_seconds(None, None, 1.0, 1.0) is None
    hlo = """%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]) parameter(0)
  %a = f32[4]{0} fusion(%p), kind=kLoop, calls=%f1
  %b = f32[4]{0} custom-call(%a), custom_call_target="__cudnn$convForward"
  ROOT %t = (s32[], f32[4]) tuple(%x, %b)
}

%cond (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]) parameter(0)
  ROOT %lt = pred[] fusion(%p), kind=kLoop, calls=%f2
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %w = (s32[], f32[4]) while(%t0), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"10"}}
  ROOT %c = f32[4]{0} copy(%x)
}
"""
    assert plan_lib.kernel_launches(hlo) == 10 * (2 + 1) + 1


def test_compile_for_builds_programs_for_other_devices():
    devices = jax.devices()[:1]
    with compile_for(devices):
        assert platform() == "cpu" and list(data_mesh().devices.flat) == devices
    assert data_mesh().devices.size == jax.device_count()


def _mlp_program():
    cfg = load_config(SMOKE, overrides=SMALL)
    return program_for(cfg, input_for(cfg))


def test_auto_group_size_from_compiled_memory(monkeypatch):
    """Given a memory limit, `auto` picks the largest group whose compiled chunk fits in
    HEADROOM of it (any backend), by the group's own memory analysis."""
    program = _mlp_program()
    compile_group = GroupCompiler(program)
    monkeypatch.setattr(runner, "GroupCompiler", lambda p: compile_group)  # one memo: each size compiles once
    m2, m4 = compile_group(2).bytes, compile_group(4).bytes
    assert m2 < m4
    limit = int((m2 + m4) / 2 / HEADROOM)  # between the group of 2 and the group of 4
    size = auto_group_size(program, 4, limit=limit)
    assert size in (2, 3) and compile_group(size).bytes <= HEADROOM * limit
    assert size == 2 or compile_group(4).bytes > HEADROOM * limit
    assert device_bytes(compile_group(size).compiled) == compile_group(size).bytes
    assert auto_group_size(program, 8) == 8  # CPU without a limit: MLPs by 8, as before


def _check_report_memory(report: dict, target: str) -> None:
    """The reported memory is the compiled program's own: compiled again here, compared."""
    c = chips.chip(target)
    cfg = load_config(SMOKE, overrides=SMALL)
    with compile_for(chips.compile_devices(c)):
        program = program_for(cfg, input_for(cfg))
        mem = program.lower_chunk(1).compile().memory_analysis()
    own = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    (p,) = report["programs"]
    one = next(g for g in p["groups"] if g["runs"] == 1)
    assert one["bytes_per_device"] == own and one["temporaries_bytes"] == mem.temp_size_in_bytes
    assert one["fits"] and p["group_size"] == 1 and one["flops_per_step"] > 0
    assert report["target"]["name"] == target and report["target"]["source"]


@pytest.mark.plan
@_needs("tpu")
def test_plan_tpu_smoke(capsys):
    assert cli.run(["plan", SMOKE, "--target", "tpu-v5e-8", "--json", *SETS]) == 0
    report = json.loads(capsys.readouterr().out)
    _check_report_memory(report, "tpu-v5e-8")
    assert report["programs"][0]["groups"][0]["bytes_per_step"] > 0
    assert report["sweep_bound_s"] > 0 and "kernels" not in report["programs"][0]


@pytest.mark.plan
@_needs("gpu")
def test_plan_gpu_smoke(capsys):
    if os.environ.get("JAX_SKIP_CUDA_CONSTRAINTS_CHECK") != "1" and jax.default_backend() != "gpu":
        pytest.skip("without a GPU, JAX must start with JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 (make test-plan sets it)")
    assert cli.run(["plan", SMOKE, "--target", "h100", *SETS]) == 0
    text = capsys.readouterr().out
    assert "kernel launches per step" in text and "lax.map over runs" in text
    report = plan_lib.plan(SMOKE, target="h100", overrides=SMALL)
    _check_report_memory(report, "h100")
    assert set(report["programs"][0]["kernels"]) == set(plan_lib.STRATEGIES)
    assert all(k > 0 for k in report["programs"][0]["kernels"].values())


@pytest.mark.slow
def test_program_that_does_not_fit_is_one_line(monkeypatch):
    """A program larger than the target's memory alone: one line naming its size and the limit
    (checked on this host's CPU as a pretend target of tiny memory)."""
    tiny = chips.Chip("tiny", "cpu", "tiny CPU", 1, "", 1e12, 1e12, 1e11, 10_000, 1.0, "none")
    monkeypatch.setitem(chips.CHIPS, "tiny", tiny)
    monkeypatch.setattr(plan_lib, "compile_devices", lambda c: jax.devices()[:1])
    with pytest.raises(UserError) as e:
        plan_lib.plan(SMOKE, target="tiny", overrides=SMALL)
    assert "\n" not in str(e.value) and "more than the" in str(e.value) and "lower train.batch_size" in str(e.value)


@pytest.mark.slow
def test_plan_on_a_pretend_target_reports_groups(monkeypatch):
    """The whole report on this host's CPU as a pretend target: groups 1, 2, 4 … up to the runs
    of the program, each with memory, flops and a bound; the table prints."""
    roomy = chips.Chip("roomy", "cpu", "roomy CPU", 1, "", 1e12, 1e12, 1e11, 10**10, 1.0, "none")
    monkeypatch.setitem(chips.CHIPS, "roomy", roomy)
    monkeypatch.setattr(plan_lib, "compile_devices", lambda c: jax.devices()[:1])
    report = plan_lib.plan("experiments/sweep_lr.py", target="roomy", max_group=4, overrides=SMALL)
    (p,) = report["programs"]
    assert [g["runs"] for g in p["groups"]] == [1, 2, 4] and p["group_size"] == 4
    assert p["group_size_limited_by"] == "--max-group" and report["runs"] == p["runs"] == 12
    assert all(g["fits"] and g["flops_per_step"] > 0 and g["bound_s_per_step"] > 0 for g in p["groups"])
    assert p["sweep_bound_s"] == pytest.approx(p["groups"][-1]["bound_s_per_step"] / 4 * 12 * p["total_steps"])
    text = plan_lib.format_plan(report)
    assert "group size: 4 (--max-group)" in text and json.dumps(report)


@pytest.mark.slow
def test_plan_of_a_streamed_run_of_an_unprepared_dataset(monkeypatch):
    """ImageNet, streamed and not prepared here: planned from its known shapes, the chunk's
    batches as arguments, one run per group (streamed runs train one at a time)."""
    roomy = chips.Chip("roomy", "cpu", "roomy CPU", 1, "", 1e12, 1e12, 1e11, 10**10, 1.0, "none")
    monkeypatch.setitem(chips.CHIPS, "roomy", roomy)
    monkeypatch.setattr(plan_lib, "compile_devices", lambda c: jax.devices()[:1])
    small = ["model.name=mlp", "data.input_size=32", "train.batch_size=8", *SMALL]
    report = plan_lib.plan("experiments/resnet50_imagenet.py", size="imagenet", target="roomy", overrides=small)
    (p,) = report["programs"]
    assert p["streaming"] and p["group_size"] == 1 and [g["runs"] for g in p["groups"]] == [1]
    # the arguments: one step's batch of 32x32x3 uint8 images and labels, and the state
    assert p["groups"][0]["arguments_bytes"] > 8 * 32 * 32 * 3
