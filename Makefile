# Every target builds .venv on first use and calls its interpreter directly
# (the python3 on PATH may be a slow pyenv shim).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-clock demo demo-fleet bench soak clean dist

$(STAMP): pyproject.toml
	@echo "installing posdiag and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@( $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# pytest-xdist: the tests mostly wait (on servers, agents, emulators, subprocesses), so more
# workers than cores; each file runs whole in one worker, its module fixtures made once.
# The modules that assert a latency or a timeout (marked serial in tests/conftest.py) run
# afterwards, alone.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(PY) -m pytest -q -p no:cacheprovider -m serial

# The tests that depend on the date, with the clock just before midnight UTC: tonight and on
# 31 December (tests/clock/run.py; needs libfaketime, Debian package faketime).
# CLOCK_ONLY=year-end runs only the 31 December instant (CI's choice: it is a day's, a month's
# and a year's end at once, in half the time).
test-clock: $(STAMP)
	$(PY) tests/clock/run.py $(if $(CLOCK_ONLY),--only $(CLOCK_ONLY))

demo: $(STAMP)
	$(VENV)/bin/posdiag demo

# A simulated fleet of 300 terminals (an open outage, a regression, missing and at-risk
# terminals) in a fresh directory, then served on http://127.0.0.1:8080/ until Ctrl-C.
demo-fleet: $(STAMP)
	@dir=$$(mktemp -d) && $(VENV)/bin/posdiag-support --data $$dir demo-fleet && $(VENV)/bin/posdiag-support --data $$dir serve --port 8080

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Longer than CI: fuzzing and kill rounds x20, then ten minutes of fleet load.
soak: $(STAMP)
	POSDIAG_SOAK=20 $(PY) -m pytest -q -p no:cacheprovider tests/reliability tests/test_daemon.py tests/test_upload.py tests/test_line_faults.py
	$(PY) bench/load.py --terminals 200 --duration 600

# The terminal executable and its .deb for x86_64 and aarch64 into dist/ (docs/install.md).
# Needs no venv; offline once its cache (/var/cache/posdiag-dist) holds the downloads.
dist:
	$$(command -v $(PYTHON) || command -v python3) packaging/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info
