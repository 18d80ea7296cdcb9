# Set-up and checks for symbackprop. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEX_PACKAGES := texlive-latex-recommended texlive-pictures texlive-lang-korean poppler-utils

.PHONY: demo test test-lowest mutate bench install tex docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .

demo: install
	$(BIN)/symbackprop derive --out out --force

# TeX Live (pdflatex, beamer, TikZ, kotex) and pdftotext for the tests that compile generated documents.
tex:
	@command -v pdflatex >/dev/null && command -v pdftotext >/dev/null \
	  && kpsewhich beamer.cls tikz.sty kotex.sty >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEX_PACKAGES) >/dev/null; }

# The PyTorch and JAX tests (tests/test_frameworks.py) need their CPU builds: torch from a local file where the
# machine has one; without them those tests are skipped.
test: $(BIN)/python tex
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 || true
	$(BIN)/python -c "import jax" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[jax]' || true
	@start=$$(date +%s); $(BIN)/python -m pytest -q --durations=10; status=$$?; \
	  echo "make test: pytest took $$(( $$(date +%s) - start )) s"; exit $$status

# The declared minimum versions of the runtime dependencies (tests/lowest_versions.txt) in a venv of their own,
# with the tests that exercise every module: what pyproject.toml promises is what runs (PyTorch and JAX are not
# installed there, so their tests may skip even in CI).
LOWEST := .venv-lowest
LOWEST_TESTS := tests/test_pipeline.py tests/test_claims.py tests/test_cli.py tests/test_spec.py \
  tests/test_generated.py tests/test_walks.py tests/test_labels.py

test-lowest: tex
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --disable-pip-version-check -c tests/lowest_versions.txt -e '.[test]'
	SYMBACKPROP_REQUIRE_TOOLS=0 $(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

# Targeted mutations (tests/mutations.py): each breaks one thing in a copy of the working tree and runs the
# few tests that guard it; the report lists the mutants that survived, and the target fails if any did.
mutate: install
	$(BIN)/python tests/mutations.py

# The benchmarks compare against PyTorch's CPU build (from a local file where the machine has one) and report
# the BLAS in use; both are optional: without them those rows are skipped.
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check threadpoolctl || true
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 || true
	$(BIN)/python -m benchmarks

# A few slides of the seed deck (Korean and English; a backward-pass slide with its panel) as PNGs for the
# README, and an overview sheet of each deck (with Pillow, from the notebook extra).
docs: $(BIN)/python tex
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[notebook]'
	$(BIN)/python docs/render_slides.py

clean:
	rm -rf $(VENV) $(LOWEST) out lecture build dist *.egg-info
