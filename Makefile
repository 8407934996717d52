# evalbus -- build entry points. CMake does the building; this file only names the steps.
#
#   make build        configure and build into build/ (RelWithDebInfo); binaries in build/bin/
#   make test         deps, ASan+UBSan+Werror build in build-test/, then ctest (unit + integration)
#   make demo         deps, build, start the local stack (scripts/stack up), run scripts/demo
#   make bench        deps, build, run bench/run
#   make format       clang-format -i on the C sources;  make lint: check formatting only
#   make stack-up / stack-down / stack-status             the local stack (see docs/operations.md)
#   make clean        remove build/ and build-test/ (the stack's state: scripts/stack reset)
#
# Variables: JOBS (parallel build jobs, default: nproc), BUILD_TYPE (default RelWithDebInfo),
# TEST_BUILD_TYPE (default RelWithDebInfo), CMAKE_ARGS (extra configure arguments), CTEST_ARGS.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_DIR ?= build
TEST_BUILD_DIR ?= build-test
BUILD_TYPE ?= RelWithDebInfo
TEST_BUILD_TYPE ?= RelWithDebInfo
CMAKE_ARGS ?=
CTEST_ARGS ?=
FORMAT_DIRS := common services cli tests bench fuzz

# Sanitizer settings for everything ctest starts (tests, and the services the integration
# harness runs). Values already in the environment win.
export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

.PHONY: all deps build test demo bench format lint stack-up stack-down stack-status clean help

all: build

help:
	@sed -n '3,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

deps:
	scripts/deps

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) --parallel $(JOBS)

test:
	scripts/deps
	cmake -S . -B $(TEST_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(TEST_BUILD_TYPE) \
	  -DEVALBUS_ASAN=ON -DEVALBUS_UBSAN=ON -DEVALBUS_WERROR=ON $(CMAKE_ARGS)
	cmake --build $(TEST_BUILD_DIR) --parallel $(JOBS)
	ctest --test-dir $(TEST_BUILD_DIR) --output-on-failure --no-tests=error $(CTEST_ARGS)

# The stack runs the binaries of this build (EVALBUS_BIN_DIR, if set, wins).
demo:
	scripts/deps
	$(MAKE) build
	EVALBUS_BIN_DIR="$${EVALBUS_BIN_DIR:-$(abspath $(BUILD_DIR))/bin}" scripts/stack up
	scripts/demo

bench:
	scripts/deps
	$(MAKE) build
	@if [[ -x bench/run ]]; then bench/run; \
	elif [[ -f bench/run ]]; then bash bench/run; \
	else echo "make bench: bench/run does not exist yet; nothing to run"; fi

# The C sources to format: *.c and *.h under FORMAT_DIRS (folders that do not exist are skipped).
format_files = $(shell find $(wildcard $(FORMAT_DIRS)) -name node_modules -prune -o \
  -type f \( -name '*.c' -o -name '*.h' \) -print 2>/dev/null | sort)

format:
	@files="$(format_files)"; [[ -z $$files ]] || clang-format -i $$files

lint:
	@files="$(format_files)"; [[ -z $$files ]] || clang-format --dry-run --Werror $$files

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down

stack-status:
	scripts/stack status

clean:
	rm -rf $(BUILD_DIR) $(TEST_BUILD_DIR)
