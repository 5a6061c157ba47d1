# Two entry points on a fresh clone:
#   make run   - set up .venv, build what is missing (dataset, trained model, fp32 and int8 bundles), print
#                metrics and the quantization gate, score the sample pairs, print the quick benchmark table
#   make test  - set up .venv, fetch the pinned data sources, lint (ruff), type-check the runtime (mypy),
#                run the whole test suite
# Downloads and built data live in $TICOR_CACHE (default ~/.cache/ticor), never in the repo.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check venv clean fixture

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[cpu,build,test,bench,ray,dev,heif]'
	touch $(STAMP)

venv: $(STAMP)

PRESET ?= multilingual

run: $(STAMP)
	$(BIN)/ticor data build
	$(BIN)/ticor train --preset $(PRESET)
	fp32="$$($(BIN)/ticor export --preset $(PRESET))" && $(BIN)/ticor info "$$fp32" && \
	  q="$$($(BIN)/ticor quantize "$$fp32")" && echo "$$q" && int8="$$(echo "$$q" | head -1)" && \
	  $(BIN)/ticor score examples/sample-pairs.csv --bundle "$$int8" && \
	  $(BIN)/ticor bench --quick --bundle "$$int8" --quiet

# Lint everything; type-check the runtime package as it is installed (a tree of links under build/mypy,
# since the package directories are mapped in pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	rm -rf build/mypy && mkdir -p build/mypy/ticor && \
	  for f in runtime/*.py runtime/py.typed runtime/commands; do ln -s "../../../$$f" build/mypy/ticor/; done
	$(BIN)/mypy -p ticor

test: check
	$(BIN)/ticor data fetch
	$(BIN)/python -m pytest -q

# Regenerate the committed test fixture (after a change to the dataset builder).
fixture: $(STAMP)
	$(BIN)/ticor data build --subset fixture --out tests/fixtures/data

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
