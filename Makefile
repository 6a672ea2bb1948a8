# rawfin: `make run` and `make test` work on a fresh clone with only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rawfin-installed
RUN_CAPTURE ?= captures/lost-final-ack.pcap

.PHONY: run test bench captures golden clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py rawfin/capture/_engine.c $(wildcard rawfin/capture/lane/*.c) rawfin/render/_writer.c
	@echo "setting up $(VENV) (Python packages and the compiled lane; log: $(VENV)/install.log)"
	$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip && \
	   $(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'; } > $(VENV)/install.log 2>&1 \
	   || { cat $(VENV)/install.log; echo "make: installing rawfin failed (log above, kept in $(VENV)/install.log)" >&2; exit 1; }
	@$(BIN)/python -c "from rawfin.capture import engine; engine.available() or print('note: ' + engine.WHY_NOT + ' (rawfin runs its pure-Python reference: same output, slower)')"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rawfin analyze $(RUN_CAPTURE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tools/bench.py
	$(BIN)/python tools/livebench.py --tcpdump

captures: $(STAMP)
	$(BIN)/rawfin scenario --all --write-dir captures

golden: $(STAMP)
	RAWFIN_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests/test_golden.py tests/test_pileup.py tests/test_capture_ladder.py -k "golden"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
