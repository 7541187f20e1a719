# Set-up and checks. `make demo` and `make test` each build the virtual
# environment first when needed. PIP_CONSTRAINT (not -c) so that the pins
# also reach pip's isolated build environment (setuptools, wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TRL in an environment of its own: it brings datasets, pandas and pyarrow,
# which the core package does not need.
VENV_TRL := .venv-trl
STAMP_TRL := $(VENV_TRL)/.installed
TRL_CONSTRAINTS := constraints.txt constraints-trl.txt
# ms-swift in its own environment too, at the transformers it resolves (5.19):
# the whole suite runs there, so the lowest transformers hardmine claims is tested.
VENV_SWIFT := .venv-swift
STAMP_SWIFT := $(VENV_SWIFT)/.installed

.PHONY: demo test test-core test-trl test-swift bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, exactly pinned: on CPU machines this takes the CPU build
	# from local disk instead of a multi-GB CUDA download.
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install --quiet torch==2.13.0
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install --quiet -e ".[test]"
	# DeepSpeed's setup imports torch, so it builds against the torch installed above.
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install --quiet --no-build-isolation deepspeed==0.19.8
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hardmine demo

$(STAMP_TRL): pyproject.toml constraints.txt constraints-trl.txt
	$(PYTHON) -m venv $(VENV_TRL)
	PIP_CONSTRAINT="$(TRL_CONSTRAINTS)" $(VENV_TRL)/bin/python -m pip install --quiet torch==2.13.0
	PIP_CONSTRAINT="$(TRL_CONSTRAINTS)" $(VENV_TRL)/bin/python -m pip install --quiet -e ".[test,trl]"
	touch $(STAMP_TRL)

$(STAMP_SWIFT): pyproject.toml constraints-swift.txt
	$(PYTHON) -m venv $(VENV_SWIFT)
	PIP_CONSTRAINT=constraints-swift.txt $(VENV_SWIFT)/bin/python -m pip install --quiet torch==2.13.0
	PIP_CONSTRAINT=constraints-swift.txt $(VENV_SWIFT)/bin/python -m pip install --quiet -e ".[test,swift]"
	PIP_CONSTRAINT=constraints-swift.txt $(VENV_SWIFT)/bin/python -m pip install --quiet --no-build-isolation deepspeed==0.19.8
	touch $(STAMP_SWIFT)

# The whole suite (transformers 5.24), the TRL tests in TRL's environment, and the
# whole suite again with ms-swift and transformers 5.19.
test: test-core test-trl test-swift

test-core: $(STAMP)
	$(BIN)/python -m pytest

test-swift: $(STAMP_SWIFT)
	$(VENV_SWIFT)/bin/python -m pytest

test-trl: $(STAMP_TRL)
	$(VENV_TRL)/bin/python -m pytest tests/train/test_trl.py tests/train/test_library_example.py tests/train/test_disabled_identity.py

# Scale of the engine, the quality suite (three tasks, 8 seeds; about 1.8 h), the signal
# replays, the long runs and the sweep (about 1.4 h), the per-step overhead (CPU; TRL in
# its own environment): about 3.5 h on two cores. Then the results page
# docs/benchmarks.md and the README's paragraph on whether mining helps, from the JSON.
bench: $(STAMP) $(STAMP_TRL)
	$(BIN)/python benchmarks/core_scale.py --samples 10000000
	# The quality suite on two cores, one process each: the text task then VL seeds 0-3 on one,
	# the counter task then VL seeds 4-7 on the other (FULL_PLAN in benchmarks/quality.py), then one report.
	# Fresh work folders: the token signals must not find an older suite's runs there.
	rm -rf /tmp/hardmine-quality-*
	(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --tasks text --out /tmp/hardmine-quality-text \
		--work /tmp/hardmine-quality-text/work && \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --tasks vl --seeds 0 1 2 3 \
		--out /tmp/hardmine-quality-vl0 --work /tmp/hardmine-quality-vl0/work) & first=$$!; \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --tasks counter --out /tmp/hardmine-quality-counter \
		--work /tmp/hardmine-quality-counter/work && \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --tasks vl --seeds 4 5 6 7 \
		--out /tmp/hardmine-quality-vl4 --work /tmp/hardmine-quality-vl4/work; own=$$?; wait $$first && [ $$own -eq 0 ]
	$(BIN)/python benchmarks/quality.py --merge /tmp/hardmine-quality-text /tmp/hardmine-quality-counter \
		/tmp/hardmine-quality-vl0 /tmp/hardmine-quality-vl4 --out benchmarks/results
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/signals.py --out benchmarks/results
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/token_signals.py --suite benchmarks/results \
		--work /tmp/hardmine-quality-vl0/work /tmp/hardmine-quality-vl4/work --out benchmarks/results
	# Side by side on the text task, each half of the seeds on one core: 20-epoch runs (clean and noisy
	# labels), then one default changed at a time (paired to the defaults); one report of each.
	pids=""; for half in "0 1 2 3" "4 5 6 7"; do \
		tag=$$(echo $$half | tr -d ' '); \
		(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --tasks text --epochs 20 \
			--arms uniform placebo defaults window2 no_flag_for_good unbounded active3 --seeds $$half \
			--out /tmp/hardmine-quality-long-$$tag --work /tmp/hardmine-quality-long-$$tag/work && \
		OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --sweep --seeds $$half \
			--out /tmp/hardmine-quality-sweep-$$tag --work /tmp/hardmine-quality-sweep-$$tag/work) & pids="$$pids $$!"; \
	done; for pid in $$pids; do wait $$pid || exit 1; done
	$(BIN)/python benchmarks/quality.py --merge /tmp/hardmine-quality-long-0123 /tmp/hardmine-quality-long-4567 \
		--out /tmp/hardmine-quality-long
	$(BIN)/python benchmarks/quality.py --merge /tmp/hardmine-quality-sweep-0123 /tmp/hardmine-quality-sweep-4567 \
		--out /tmp/hardmine-quality-sweep
	cp /tmp/hardmine-quality-long/quality.json benchmarks/results/quality-long.json
	cp /tmp/hardmine-quality-sweep/quality.json benchmarks/results/quality-sweep.json
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/overhead.py --repeats 60 --out benchmarks/results/overhead.json
	OMP_NUM_THREADS=1 $(VENV_TRL)/bin/python benchmarks/overhead.py --repeats 60 --configs trl-text --scale 1000 \
		--out benchmarks/results/overhead-trl.json
	$(BIN)/python benchmarks/report.py --results benchmarks/results --docs docs --readme README.md

clean:
	rm -rf $(VENV) $(VENV_TRL) $(VENV_SWIFT) .pytest_cache .hypothesis
