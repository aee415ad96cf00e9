# rxd — the short commands. A thin layer over scripts/ and CMake (like neovim's):
# everything here can also be done by hand, see README.md.
#
#   make            install missing Debian packages, configure and build (build/)
#   make run        build, start the local PostgreSQL + Redis, run `rxd serve --migrate`
#   make test       build, start services, run every test with ctest
#   make test-asan  the same with ASan + UBSan (build-asan/)
#   make stop       stop the local services
#   make bench      throughput and memory benchmark against nginx (bench/README.md)
#   make format     clang-format our C sources in place
#   make clean      remove build/ and build-asan/ (never var/: it holds the dev database)
#
# Variables: BUILD_TYPE (RelWithDebInfo), JOBS (nproc), CMAKE_FLAGS (extra -D options
# for the first configure), RUN_ARGS (extra `rxd serve` arguments), DEPS (the package
# installer; DEPS=true skips it, e.g. off Debian).

BUILD_TYPE ?= RelWithDebInfo
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest
CMAKE_FLAGS ?=
RUN_ARGS ?=
DEPS ?= scripts/deps.sh
SERVICES := scripts/services.sh
CLANG_FORMAT ?= clang-format

# Sanitizer reports with stacks, leaks checked, UBSan fatal (also built with
# -fno-sanitize-recover). A caller's own settings win.
ASAN_ENV := ASAN_OPTIONS="$${ASAN_OPTIONS:-detect_leaks=1}" \
	UBSAN_OPTIONS="$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# cmake --build runs its own make: do not hand it ours (-j, jobserver, -n ...).
CMAKE_BUILD = env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(CMAKE) --build

.PHONY: all build deps configure run test test-asan build-asan services stop bench fuzz format clean

all: build

deps:
	@$(DEPS)

# Configure once; afterwards `cmake --build` re-runs CMake itself when CMakeLists change.
# To change options, `make clean` or run cmake on the build directory yourself.
configure: deps
	@test -f $(BUILD_DIR)/CMakeCache.txt || \
	    $(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: configure
	$(CMAKE_BUILD) $(BUILD_DIR) -j $(JOBS)

build-asan: deps
	@test -f $(ASAN_DIR)/CMakeCache.txt || \
	    $(CMAKE) -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DRXD_SANITIZE=ON $(CMAKE_FLAGS)
	$(CMAKE_BUILD) $(ASAN_DIR) -j $(JOBS)

services: deps
	@$(SERVICES) start

# exec: rxd replaces the shell, so Ctrl-C and SIGTERM reach it directly.
run: build
	@$(SERVICES) start
	eval "$$($(SERVICES) env)" && exec $(BUILD_DIR)/rxd serve --migrate $(RUN_ARGS)

test: build
	@$(SERVICES) start
	eval "$$($(SERVICES) env)" && \
	    $(CTEST) --test-dir $(BUILD_DIR) --output-on-failure -j2

test-asan: build-asan
	@$(SERVICES) start
	eval "$$($(SERVICES) env)" && $(ASAN_ENV) \
	    $(CTEST) --test-dir $(ASAN_DIR) --output-on-failure -j2

stop:
	@$(SERVICES) stop

bench:
	@$(DEPS) --bench
	@$(MAKE) --no-print-directory build DEPS=true
	BENCH_RXD=$(BUILD_DIR)/rxd bench/run.sh

# libFuzzer targets (clang-14), each run for FUZZ_SECONDS; CI runs a short smoke.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 20
fuzz: deps
	@test -f $(FUZZ_DIR)/CMakeCache.txt || \
	    CC=clang-14 $(CMAKE) -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRXD_FUZZ=ON -DRXD_WEB_ASSETS=OFF
	$(CMAKE_BUILD) $(FUZZ_DIR) -j $(JOBS) --target fuzz_router fuzz_config fuzz_http
	@for t in router config http; do \
	    echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	    mkdir -p $(FUZZ_DIR)/corpus/$$t && \
	    if ! $(FUZZ_DIR)/tests/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        $(FUZZ_DIR)/corpus/$$t > $(FUZZ_DIR)/fuzz_$$t.log 2>&1; then \
	        tail -n 60 $(FUZZ_DIR)/fuzz_$$t.log; echo "fuzz_$$t FAILED"; exit 1; \
	    fi; \
	    grep -E '^Done|exec_per_sec|new_units' $(FUZZ_DIR)/fuzz_$$t.log; \
	done

# Our C sources only: llhttp is compiled from the system's copy, not kept here.
format:
	@find kernel sdk modules tests bench -name '*.[ch]' -print0 2>/dev/null | \
	    xargs -0 -r $(CLANG_FORMAT) -i

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
