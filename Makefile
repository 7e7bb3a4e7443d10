# sagefit build. `make setup` is idempotent: a pinned virtualenv (.venv) holds the
# TensorFlow wheel whose shared libraries and headers the Go binary links against.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sagefit-setup
LIB := $(CURDIR)/lib
GO ?= go

# cgo flags for model/ (the only package that links libtensorflow).
export CGO_CFLAGS := -I$(LIB)/include
export CGO_LDFLAGS := -L$(LIB) -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,$(LIB)
export SAGEFIT_PYTHON := $(CURDIR)/$(PY)
# Whether the caller set TensorFlow's log level: the demo leaves it unset
# for sagefit where they did not, so sagefit quiets TensorFlow itself
# (its start-up lines, which the level alone does not all keep out).
TF_LOG_ORIGIN := $(origin TF_CPP_MIN_LOG_LEVEL)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup build test test-go test-race test-python demo bench bench-allreduce clean vet env lint-docker test-images

setup: $(STAMP)

$(STAMP): python/requirements.txt python/pyproject.toml scripts/install-libtensorflow.sh
	scripts/install-libtensorflow.sh $(PYTHON) $(VENV) $(LIB)
	touch $@

build: setup
	$(GO) build -o bin/sagefit ./cmd/sagefit

# Everything but the session (model/tf) and what wires it in builds without
# libtensorflow: checked with cgo off.
vet: setup
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build $$($(GO) list ./... | grep -v -e '/model/tf$$' -e '/sagefit/runtime$$' -e '/cmd/sagefit$$')

test: build vet lint-docker test-go test-race test-python

test-go: setup
	$(GO) test -count=1 -timeout 40m ./...

# The race detector over the packages whose goroutines share memory (the
# collectives, the input pipeline, the fit loop, the session) and the
# runtime's jobs of several hosts in one process (their join and decline
# log from several goroutines); the whole runtime package under -race
# takes 12 minutes here. About 4 minutes on 2 cores.
test-race: setup
	$(GO) test -race -count=1 -timeout 20m ./data ./distributed/... ./internal/... ./model/... \
		$$($(GO) list ./runtime/... | grep -v '/sagefit/runtime$$')
	$(GO) test -race -count=1 -timeout 20m -run 'ManyHosts|SeveralHosts|Stop|Pipe' ./runtime

test-python: setup
	$(PY) -m pytest -q python/tests

lint-docker: setup
	docker/lint.sh $(PY)

# The training images, built and run for real (as root): installs Debian's
# Docker engine when missing, starts dockerd if none runs (and stops it),
# builds sagefit:cpu and sagefit:gpu without pulling, runs the image tests
# (docker/README.md). About 15 minutes on a fresh machine, 2 cores.
test-images: setup
	scripts/test-images.sh $(PYTHON)

demo: build
	$(if $(filter undefined,$(TF_LOG_ORIGIN)),env -u TF_CPP_MIN_LOG_LEVEL) scripts/demo.sh

bench: build
	scripts/bench.sh

# Ring all-reduce bus bandwidth vs TensorFlow's CollectiveAllReduce and raw
# TCP (about 20 minutes on 2 cores; see BENCHMARKS.md).
bench-allreduce: setup
	scripts/bench-allreduce.sh

clean:
	rm -rf bin lib $(VENV)

# For running go commands by hand: eval "$(make -s env)"
env:
	@echo export CGO_CFLAGS='"$(CGO_CFLAGS)"' CGO_LDFLAGS='"$(CGO_LDFLAGS)"' SAGEFIT_PYTHON='"$(SAGEFIT_PYTHON)"'
