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

lint:            ## ruff (Python), cython-lint (bindings), clang-format (every C file)
	$(PYTHON) -m ruff check fastnorm tests bench tools examples setup.py
	cython-lint --max-line-length 100 fastnorm/_kernels.pyx fastnorm/_kernels.pxd
	clang-format --dry-run --Werror csrc/*.c csrc/*.h csrc/*.inc tools/*.c tools/*.h

sanitize:        ## ASan+UBSan build in a temporary copy; tests and leak check under it
	PYTHON=$(PYTHON) bash tools/sanitize.sh

clean:           ## remove build products
	rm -rf build *.egg-info fastnorm/_kernels.c fastnorm/*.so
