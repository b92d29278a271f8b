PYTHON ?= python3
# One environment per interpreter, so `make test PYTHON=python3.12` never reuses a 3.11 .venv.
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jaxgan.demo

# Each test file runs in one worker, so its module fixtures (trained runs, built data sets) are
# made once. `make test` leaves out the tests marked slow (several `jaxgan` processes each:
# multi-host, preemption, pod and SLURM launches, kill -9); `make test-slow` runs those.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST) -m slow tests

clean:
	rm -rf $(VENV) runs samples
