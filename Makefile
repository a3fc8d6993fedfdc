# process_isolation — the two commands in the README are `make demo` and `make test`.
#
#   make demo    install what is missing, build, run examples/crash_demo.py
#   make test    install what is missing, build, run every test (ctest, then pytest)
#   make bench   build and run the benchmarks against the peers (writes bench/RESULTS.md)
#   make fuzz    build the libFuzzer targets (clang, ASan, UBSan) and run each FUZZ_SECONDS
#   make soak    a scripted hostile child sends SOAK_SECONDS of mutated frames at a real parent
#
# Everything Python goes into a virtual environment (.venv) made from PYTHON; the C++ libraries
# come from Debian's packages (scripts/install-system-deps.sh).

PYTHON ?= python3
VENV ?= .venv
CPP_BUILD ?= build/cpp
JOBS ?= $(shell nproc)

VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
# The venv's cmake, ninja and ctest come first.
export PATH := $(VENV_ABS)/bin:$(PATH)

.PHONY: demo test test-cpp test-python install deps venv bench fuzz fuzz-build soak clean

deps:
	./scripts/install-system-deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: deps $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt

install: venv
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation .

demo: install
	$(PY) examples/crash_demo.py

test-cpp: venv
	cmake -S . -B $(CPP_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPI_BUILD_TESTS=ON -DPI_WERROR=ON -DPython_EXECUTABLE=$(PY) \
	  -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	cmake --build $(CPP_BUILD) -j $(JOBS)
	cd $(CPP_BUILD) && ctest --output-on-failure --timeout 300

test-python: install
	$(PY) -m pytest tests/python -q -p no:cacheprovider --timeout 300

test: test-cpp test-python

BENCH_BUILD ?= build/bench

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPI_BUILD_BENCHMARKS=ON \
	  -DPython_EXECUTABLE=$(PY) -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	cmake --build $(BENCH_BUILD) --target hot_path_bench -j $(JOBS)
	$(PY) bench/run.py --cpp-bench $(BENCH_BUILD)/bench/cpp/hot_path_bench $(BENCH_ARGS)

FUZZ_BUILD ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

# Clang only (libFuzzer comes with it): its own build directory, never mixed with g++'s.
fuzz-build: venv
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPI_BUILD_FUZZERS=ON \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPython_EXECUTABLE=$(PY) \
	  -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	cmake --build $(FUZZ_BUILD) --target pi_fuzzers -j $(JOBS)

fuzz: fuzz-build
	./tests/fuzz/run.sh $(FUZZ_BUILD)/tests/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

SOAK_SECONDS ?= 600

soak: install
	PI_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest tests/python/test_soak.py -q -p no:cacheprovider \
	  --timeout $$(( $(SOAK_SECONDS) + 300 )) -s

clean:
	rm -rf build $(VENV)
