# normjax: every command a user needs. Creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIZE ?= smoke
WORKDIR ?= runs

.PHONY: demo demo-seeds test lint test-slow test-isa test-plan plan bench bench-conv bench-gpu bench-gpu-steps bench-gpu-stream install clean sweeps explode elr-conv apl docs docs-figures data reproduce-elr reproduce-apl

# The training stack (the `train` extra) and the test tools; `pip install .` alone is the base install.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,test]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the offline embedded data (scikit-learn digits): both studies in small.
# ELR: a deep plain BN ResNet and its residual twin, per-layer ELR figures, and the weight-dynamics
# model's prediction against the measurement (figures under $(WORKDIR)/demo-$(SIZE)/*/figures and
# .../demo-$(SIZE)/figures). APL: a PReLU ResNet sparsified during and after training to chosen
# fractions of nonlinear units, accuracy vs APL and the core network ($(WORKDIR)/demo-apl-$(SIZE)/figures),
# one run's APL report and its folded network. Each size has its own directories: a sweep directory
# holds one size (`normjax sweep` refuses another), so no table or figure mixes them.
DEMO := $(WORKDIR)/demo-$(SIZE)
DEMO_APL := $(WORKDIR)/demo-apl-$(SIZE)
# The run of this sweep (the newest config.json: a runs/ folder from an older version can hold
# runs of the same regime under other names).
DEMO_APL_RUN = $$(dirname $$(ls -t $(DEMO_APL)/regime=after-prelu_target=0.03-*/config.json | head -1))
demo: $(STAMP)
	$(BIN)/normjax sweep experiments/sweep_elr_demo.py --size $(SIZE) --workdir $(DEMO)
	$(BIN)/normjax results $(DEMO)
	$(BIN)/normjax elr-plot $(DEMO)
	$(BIN)/normjax ode $(DEMO)
	for r in $(DEMO)/*/config.json; do $(BIN)/normjax elr-plot $$(dirname $$r) || exit 1; done
	$(BIN)/normjax sweep experiments/sweep_apl_demo.py --size $(SIZE) --workdir $(DEMO_APL)
	$(BIN)/normjax results $(DEMO_APL)
	$(BIN)/normjax apl-plot $(DEMO_APL)
	$(BIN)/normjax apl $(DEMO_APL_RUN)
	$(BIN)/normjax fold $(DEMO_APL_RUN)
	$(BIN)/normjax fold $(DEMO_APL_RUN) --spatial --out $(DEMO_APL_RUN)/folded-spatial
	@echo "ELR figures: $(DEMO)/figures   APL figure: $(DEMO_APL)/figures/accuracy_vs_apl.png"

# The demo's sweeps again over SEEDS (one invocation a seed, `--set train.seed=S`), into their own
# directories, and their tables (mean ± std over seeds) and APL figures: the spread behind the
# demo's one-seed numbers (docs/results.md).
SEEDS ?= 0 1 2 3 4
demo-seeds: $(STAMP)
	for s in $(SEEDS); do $(BIN)/normjax sweep experiments/sweep_elr_demo.py --size $(SIZE) \
		--workdir $(DEMO)-seeds --set train.seed=$$s || exit 1; done
	for s in $(SEEDS); do $(BIN)/normjax sweep experiments/sweep_apl_demo.py --size $(SIZE) \
		--workdir $(DEMO_APL)-seeds --set train.seed=$$s || exit 1; done
	$(BIN)/normjax results $(DEMO)-seeds
	$(BIN)/normjax results $(DEMO_APL)-seeds
	$(BIN)/normjax apl-plot $(DEMO_APL)-seeds

# Fashion-MNIST as the TFDS dataset fashion_mnist in the TFDS data dir ($TFDS_DATA_DIR, else
# ~/tensorflow_datasets), offline: Debian's dataset-fashion-mnist holds the four IDX files (installed
# here when run as root with apt-get; `apt-get update` only when the install fails), then `normjax
# prepare` writes them as array_record (kept if already prepared).
DATA_PKG := dataset-fashion-mnist
data: $(STAMP)
	@if dpkg -s $(DATA_PKG) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(DATA_PKG)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $(DATA_PKG) >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $(DATA_PKG) >/dev/null; } || true; \
	else echo "make data: $(DATA_PKG) is not installed; as root run: apt-get install $(DATA_PKG)"; fi
	$(BIN)/normjax prepare fashion_mnist

# The ELR study reproduced on Fashion-MNIST (docs/reproduction.md): the medium sweeps, the explosion,
# the critical LR measured at init and after 10/100 SGD steps (plain and residual, depth 21/41), the
# report of every claim's numbers, and its figures copied into docs/reproduction/.
# The regimes again at LR 3, above the critical LR at init, where the critical-LR warm-up engages;
# uniform ELR again with the common ELR at the layers' geometric mean (sweep_elr_uniform.py).
CRIT_DIRS = $(foreach sc,false true,$(WORKDIR)/critical_lr-medium-shortcut=$(sc) $(WORKDIR)/critical_lr-medium-si-shortcut=$(sc))
reproduce-elr: $(STAMP)
	$(MAKE) sweep-elr_trajectories sweep-elr_regimes sweep-elr_uniform sweep-elr_pilot sweep-elr_decisive explode SIZE=medium
	$(BIN)/normjax sweep experiments/sweep_elr_regimes.py --size medium --set optim.lr=3.0 \
		--workdir $(WORKDIR)/sweep-elr_regimes-medium-lr3
	for sc in false true; do for scope in all scale_invariant; do \
		$(BIN)/normjax critical-lr experiments/elr_resnet.py --size medium --set model.shortcut=$$sc --depths 21,41 \
		--seeds 3 --at 0,10,100 --scope $$scope \
		--out $(WORKDIR)/critical_lr-medium$$([ $$scope = all ] || echo -si)-shortcut=$$sc || exit 1; done; done
	$(BIN)/normjax elr-report --out $(WORKDIR)/elr-report-medium --trajectories $(WORKDIR)/sweep-elr_trajectories-medium \
		--regimes $(WORKDIR)/sweep-elr_regimes-medium --regimes $(WORKDIR)/sweep-elr_regimes-medium-lr3 \
		--regimes $(WORKDIR)/sweep-elr_uniform-medium \
		--explode $(WORKDIR)/explode-mlp-medium \
		--explode $(WORKDIR)/explode-resnet-medium $(foreach d,$(CRIT_DIRS),--critical $(d)) \
		--decisive $(WORKDIR)/sweep-elr_decisive-medium
	for d in sweep-elr_regimes-medium sweep-elr_regimes-medium-lr3; do \
		$(BIN)/normjax elr-plot $(WORKDIR)/$$d --hue optim.name || exit 1; done
	$(BIN)/python docs/copy_figures.py --reproduction $(WORKDIR)
	$(MAKE) elr-conv SIZE=mnist1d
	$(MAKE) elr-conv SIZE=fmnist_conv

# The APL study: baselines, the target sweep and the λ sweep, figures with the baselines drawn in,
# and the report of every claim's numbers (collapse, core, gap, baselines, folded first-seed runs).
# SIZE=fmnist_conv runs the target sweep alone: its λ sweep (42 conv runs, `make sweep-apl_sparsity
# SIZE=fmnist_conv`) takes many hours on 2 CPU cores.
APL_KINDS = targets $(if $(filter fmnist_conv,$(SIZE)),,sparsity)
APL_SWEEPS = $(foreach k,$(APL_KINDS),$(WORKDIR)/sweep-apl_$(k)-$(SIZE))
apl: $(STAMP)
	$(MAKE) sweep-apl_baselines $(foreach k,$(APL_KINDS),sweep-apl_$(k))
	for d in $(APL_SWEEPS); do \
		$(BIN)/normjax apl-plot $$d --baselines $(WORKDIR)/sweep-apl_baselines-$(SIZE) || exit 1; done
	$(BIN)/normjax apl-report $(APL_SWEEPS) --baselines $(WORKDIR)/sweep-apl_baselines-$(SIZE) \
		--out $(WORKDIR)/apl-report-$(SIZE) --fold

# The APL study reproduced (docs/reproduction.md, APL half): `make apl` at the page's sizes
# (APL_SIZES: MNIST-1D, the PReLU ResNet-20 on Fashion-MNIST, then the medium MLPs on digits,
# Fashion-MNIST and parity), figures and report copied into docs/reproduction/apl-mnist1d/,
# docs/reproduction/apl-fmnist_conv/ and docs/reproduction/apl/.
APL_SIZES ?= mnist1d fmnist_conv medium
reproduce-apl: $(STAMP)
	for s in $(APL_SIZES); do $(MAKE) apl SIZE=$$s && $(BIN)/python docs/copy_figures.py --apl $(WORKDIR) --size $$s || exit 1; done

# One style, checked: ruff's lint and formatter (pyproject.toml's [tool.ruff]) on the whole tree;
# `$(BIN)/ruff format . && $(BIN)/ruff check --fix .` repairs what they find.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The lint and the docs build first (warnings fail it), then the tests on two workers, one test
# file each (module-scoped fixtures stay in one process).
test: $(STAMP) lint docs
	$(BIN)/python -m pytest -q -x -n 2 --dist loadfile

# HTML documentation in docs/_build/html: the pages of docs/, the CLI and config references
# generated from the code, the API reference from the docstrings. -E: a fresh environment, so
# every docstring is read again and every warning shows (-W: and fails the build). docs/conf.py warns
# where a built page would load anything from the network: MathJax is served from _static/mathjax.
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# The figures of docs/figures.md (docs/figures/*.png, committed): `make demo`'s, copied and
# checked by docs/copy_figures.py.
docs-figures: demo
	$(BIN)/python docs/copy_figures.py $(WORKDIR)

test-slow: $(STAMP) test-isa test-plan
	$(BIN)/python -m pytest -q -m slow

# The compile tests of `normjax plan` (tests/test_plan.py, marked plan): a smoke program compiled for
# a TPU slice and for an H100, with each family's compiler from .plan-site/ (`make plan` installs
# it); a family not installed is skipped with its install command.
test-plan: $(STAMP)
	for f in tpu gpu; do PYTHONPATH=$(PLAN_SITE)/$$f JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 \
		$(BIN)/python -m pytest -q -p no:cacheprovider -rs -m plan tests/test_plan.py || exit 1; done

# Compile a sweep's programs for a TPU or GPU that is not here: memory per device, the largest group
# that fits, flops, a roofline bound (`normjax plan`; make plan SPEC=experiments/sweep_lr.py
# SIZE=full TARGET=tpu-v5e-8|tpu-v4-8|tpu-v6e-8|h100|h200|a100 ...). The target's compiler (libtpu, or
# the CUDA 12 plugin and its libraries) is installed once into .plan-site/tpu or .plan-site/gpu, outside
# .venv: there it would make every JAX start look for that chip. JAX_SKIP_CUDA_CONSTRAINTS_CHECK: the
# plugin's check of a CUDA driver fails where there is no GPU, and a compile needs none.
SPEC ?= experiments/sweep_lr.py
TARGET ?= tpu-v5e-8
PLAN_SITE := .plan-site
PLAN_FAMILY = $(if $(filter tpu-%,$(TARGET)),tpu,gpu)
$(PLAN_SITE)/%/.installed: $(STAMP)
	$(BIN)/pip install -q --target $(PLAN_SITE)/$* $$($(BIN)/python -c 'from normjax.chips import requirements; print(*requirements("$*"))')
	touch $@
plan: $(STAMP) $(PLAN_SITE)/$(PLAN_FAMILY)/.installed
	PYTHONPATH=$(PLAN_SITE)/$(PLAN_FAMILY) JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 \
		$(BIN)/normjax plan $(SPEC) --size $(SIZE) --target $(TARGET)

# The tests that compare two different programs (vmapped vs alone, 1 vs 8 devices, scanned vs
# unrolled, ...) again with XLA:CPU capped at narrower instruction sets: other vector widths give
# other code, as another CPU model does, so a tolerance that holds on one CPU alone fails here.
ISAS ?= SSE4_2 AVX2
test-isa: $(STAMP)
	for isa in $(ISAS); do echo "XLA_FLAGS=--xla_cpu_max_isa=$$isa"; \
		XLA_FLAGS=--xla_cpu_max_isa=$$isa $(BIN)/python -m pytest -q -p no:cacheprovider -m cross_program -n 2 || exit 1; done

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.bench --out benchmarks/results-cpu.json
	$(BIN)/python -m benchmarks.transforms_overhead --out benchmarks/results-transforms-cpu.json
	$(BIN)/python -m benchmarks.metrics_overhead --out benchmarks/results-metrics-cpu.json
	$(BIN)/python -m benchmarks.apl_overhead --out benchmarks/results-apl-cpu.json
	$(BIN)/python -m benchmarks.input_throughput --out benchmarks/results-input-cpu.json
	$(BIN)/python -m benchmarks.stream_step --out benchmarks/results-stream-cpu.json

# The conv sizes of the CPU studies: the 1-D ResNet-20 on MNIST-1D-shaped signals and ResNet-20 at width 8 on 28x28, against PyTorch eager and a plain Flax port, in one run.
bench-conv: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.bench --only mnist1dresnet20_torch_eager mnist1dresnet20_flax_plain mnist1dresnet20_normjax fmnistresnet20w8_torch_eager fmnistresnet20w8_flax_plain fmnistresnet20w8_normjax --out benchmarks/results-conv-cpu.json

# The GPU sweep benchmark (benchmarks/gpu_strategies.py), on a GPU machine whose image has jax[cuda],
# flax and optax (no venv: the system python; it needs nothing else of this repository's extras):
# the ways to train a group of runs (vmapped with XLA's grouped convs or with normjax's per-run
# convs, lax.map over the runs, the runs one after another) for 8, 32 and 16 ResNet-20 runs at batch
# 128, then the deep BN MLP and the PReLU ResNet-20 with the λ controller, in that order. Each case
# runs in its own process under its own limit, the JSON is written after each, and the whole fits
# 480 s: one device command (10 minutes at most) of a 15-minute lease, the machine's start included.
GPU_OUT ?= benchmarks
bench-gpu:
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 540 $(PY) -m benchmarks.gpu_strategies --budget 480 \
		--case-limit 120 --out $(GPU_OUT)/results-gpu-strategies.json

# The single-run steps on a GPU: against PyTorch and plain Flax, the hooks, the transforms and the APL
# step (about 15 minutes; each part time-limited, its JSON written into GPU_OUT). Needs torch too.
GPU_CASES := resnet20_torch_eager resnet20_torch_compile resnet20_flax_plain resnet20_normjax \
	resnet20_normjax-nometrics resnet20_normjax-bf16 mlp_torch_eager mlp_torch_compile mlp_jax_plain \
	mlp_normjax mlp_normjax-nometrics resnet56_normjax resnet110_normjax
bench-gpu-steps:
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 250 $(PY) -m benchmarks.bench --warmup 5 --iters 50 --only $(GPU_CASES) --out $(GPU_OUT)/results-gpu.json
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 140 $(PY) -m benchmarks.metrics_overhead --out $(GPU_OUT)/results-metrics-gpu.json
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 110 $(PY) -m benchmarks.transforms_overhead --out $(GPU_OUT)/results-transforms-gpu.json
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 300 $(PY) -m benchmarks.apl_overhead --rounds 8 --out $(GPU_OUT)/results-apl-gpu.json

# The streamed step against the in-memory one on a GPU node: ResNet-50 at 224x224 (bfloat16),
# JPEGs read from a Python list (the device image lacks tensorflow-datasets) by 12 grain worker
# processes. Needs grain (with array-record and cloudpickle) importable by $(PY).
bench-gpu-stream:
	-XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 420 $(PY) -m benchmarks.stream_step --source list --model resnet50 \
		--size 224 --image 400 --batch 128 --epoch-batches 8 --workers 12 --threads 2 --dispatch 5 --warmup 2 \
		--chunks 8 --rounds 3 --dtype bfloat16 --out $(GPU_OUT)/results-stream-gpu.json

# Sweeps: `make sweep-NAME` runs experiments/sweep_NAME.py (SIZE=smoke|medium|gpu|full|mnist1d|fmnist_conv,
# the sizes the file has; WORKDIR=runs; ONLY="task=fashion_mnist ...": only the runs with these
# varied values, the rest listed as missing), then prints its results table and draws its figure.
# Adding a sweep: add experiments/sweep_NAME.py and one line "NAME: x=KEY hue=KEY" to SWEEP_PLOTS below.
SWEEP_PLOTS_depth := --x model.depth --hue model.shortcut
SWEEP_PLOTS_lr := --x optim.lr --hue optim.momentum --log-x
SWEEP_PLOTS_elr_trajectories := --x optim.lr --hue model.shortcut --log-x
SWEEP_PLOTS_elr_regimes := --x optim.name --hue model.shortcut
SWEEP_PLOTS_elr_uniform := --x model.shortcut
SWEEP_PLOTS_elr_pilot := --x optim.lr --hue model.shortcut --log-x
SWEEP_PLOTS_elr_decisive := --x optim.arm
SWEEP_PLOTS_apl_sparsity := --x apl --hue train.regime --panel data.task
SWEEP_PLOTS_apl_targets := --x apl --hue train.regime --panel data.task
SWEEP_PLOTS_apl_baselines := --x model.depth --hue model.baseline
SWEEP_PLOTS_apl_demo := --x apl --hue train.regime
# MNIST-1D's published accuracies (Greydanus & Kobak, arXiv:2011.14439) drawn beside the measured ones.
MNIST1D_PUBLISHED := --ref 'logistic regression (published)=0.32' --ref 'MLP (published)=0.68' --ref 'CNN (published)=0.94'
SWEEP_PLOTS_references := --x model.reference $(if $(filter mnist1d,$(SIZE)),$(MNIST1D_PUBLISHED))
# Study commands run after a sweep's table and figure ("NAME_AFTER: commands on the sweep dir").
SWEEP_AFTER_elr_trajectories := elr-plot ode
SWEEP_AFTER_elr_regimes := elr-plot
SWEEP_AFTER_apl_sparsity := apl-plot
SWEEP_AFTER_apl_targets := apl-plot

sweeps:
	@ls experiments/sweep_*.py | sed 's|experiments/sweep_\(.*\)\.py|make sweep-\1|'

sweep-%: $(STAMP)
	$(BIN)/normjax sweep experiments/sweep_$*.py --size $(SIZE) --workdir $(WORKDIR)/sweep-$*-$(SIZE) $(SHARD_ARG) $(ONLY_ARG)
	$(BIN)/normjax results $(WORKDIR)/sweep-$*-$(SIZE)
	$(BIN)/normjax plot $(WORKDIR)/sweep-$*-$(SIZE) --y test_accuracy $(or $(SWEEP_PLOTS_$*),--x train.seed)
	$(foreach c,$(SWEEP_AFTER_$*),$(BIN)/normjax $(c) $(WORKDIR)/sweep-$*-$(SIZE) &&) true

# The ELR study in conv nets (SIZE=mnist1d: 1-D ResNet-20/56 on MNIST-1D; SIZE=fmnist_conv: ResNet-20/56
# at width 8 on Fashion-MNIST), plain vs residual: early spreads and the order flip over LR x momentum,
# accuracy against spread, the model against measurement (the trajectories sweep), the explosion,
# the critical LR at init and after 10/100 SGD steps, and (where the decisive sweep file has the
# size) the decisive tests at the LR the pilot (plain vs residual over LR, one seed) picked; the
# report in $(WORKDIR)/elr-report-$(SIZE), its figures and numbers copied into
# docs/reproduction/elr-$(SIZE)/. fmnist_conv runs the pilot (6 ResNet-56 runs, about 50 min on 2
# CPU cores) but has no decisive size: 60 ResNet-56 runs are hours on 2 CPU cores.
ELR_CONV_CRIT = $(foreach sc,false true,$(WORKDIR)/critical_lr-$(SIZE)-shortcut=$(sc))
# The critical LR after 0/10/100 steps; MNIST-1D's 4000 examples hold 31 batches: 0/10/25 there.
ELR_CONV_AT_DEFAULT := 0,10,100
ELR_CONV_AT_mnist1d := 0,10,25
# The decisive tests of claims 8 and 9 (`sweep_elr_decisive.py`, at its pilot's LR) where the sweep
# file has the size.
ELR_DECISIVE_SIZES := medium mnist1d
ELR_CONV_DECISIVE = $(filter $(SIZE),$(ELR_DECISIVE_SIZES))
elr-conv: $(STAMP)
	$(MAKE) sweep-elr_trajectories explode sweep-elr_pilot $(if $(ELR_CONV_DECISIVE),sweep-elr_decisive) SIZE=$(SIZE)
	for sc in false true; do \
		$(BIN)/normjax critical-lr experiments/elr_resnet.py --size $(SIZE) --set model.shortcut=$$sc --depths 20,56 \
		--seeds 3 --at $(or $(ELR_CONV_AT_$(SIZE)),$(ELR_CONV_AT_DEFAULT)) --out $(WORKDIR)/critical_lr-$(SIZE)-shortcut=$$sc || exit 1; done
	$(BIN)/normjax elr-report --out $(WORKDIR)/elr-report-$(SIZE) --trajectories $(WORKDIR)/sweep-elr_trajectories-$(SIZE) \
		--explode $(WORKDIR)/explode-mlp-$(SIZE) --explode $(WORKDIR)/explode-resnet-$(SIZE) \
		$(foreach d,$(ELR_CONV_CRIT),--critical $(d)) \
		$(if $(ELR_CONV_DECISIVE),--decisive $(WORKDIR)/sweep-elr_decisive-$(SIZE))
	$(BIN)/python docs/copy_figures.py --elr-conv $(WORKDIR) --size $(SIZE)

# Gradient explosion at init over depth: BN-ReLU MLPs, and ResNets plain vs residual (the ELR study).
explode: $(STAMP)
	$(BIN)/normjax explode experiments/explode_depth.py --size $(SIZE) --out $(WORKDIR)/explode-mlp-$(SIZE)
	$(BIN)/normjax explode experiments/explode_resnet.py --size $(SIZE) --out $(WORKDIR)/explode-resnet-$(SIZE)

SHARD_ARG = $(if $(SHARD),--shard $(SHARD),)
ONLY_ARG = $(foreach o,$(ONLY),--only $(o))

clean:
	rm -rf $(VENV) runs *.egg-info
