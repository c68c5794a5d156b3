PYTHON ?= python3

.PHONY: help build test bench bench-full lint sanitize clean

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build:           ## build the extension in place (editable install)
	$(PYTHON) -m pip install -e ".[test]"

test: build      ## run the test suite
	$(PYTHON) -m pytest

bench: build     ## quick table: fastnorm vs reference vs PyTorch
	$(PYTHON) -m fastnorm bench

bench-full: build  ## pytest-benchmark over every op and shape
	$(PYTHON) -m pytest bench --benchmark-only

lint:            ## ruff for Python, clang-format check for C
	$(PYTHON) -m ruff check fastnorm tests bench setup.py
	clang-format --dry-run --Werror csrc/*.c csrc/*.h

sanitize:        ## ASan+UBSan build in a temporary copy; tests and leak check under it
	PYTHON=$(PYTHON) bash tools/sanitize.sh

clean:           ## remove build products
	rm -rf build *.egg-info fastnorm/_kernels.c fastnorm/*.so
