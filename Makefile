# Container images: build and push the images the compiled pipelines reference.
#
#   make images REGISTRY=registry.example.com/ml TAG=0.1.0   # build, then push, all of them
#   make images-build                                        # build only
#   make images-push                                         # push what images-build built
#   make images-list                                         # name, Dockerfile, reference
#
# Names, Dockerfiles and references come from components/_images.py (the one place that
# defines them): REGISTRY and TAG are its SEEDBED_REGISTRY and SEEDBED_IMAGE_TAG, so compile
# the pipelines with the same values. Empty: its defaults (ghcr.io/seedbed, the project version).
# The build context is the repository root, filtered by .dockerignore; the Dockerfiles use
# BuildKit (`docker buildx` or Docker >= 23). DOCKER_BUILD_FLAGS is passed to every build,
# e.g. DOCKER_BUILD_FLAGS="--platform linux/amd64 --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...".

PYTHON ?= python3
DOCKER ?= docker
REGISTRY ?=
TAG ?=
DOCKER_BUILD_FLAGS ?=

IMAGES_PY = SEEDBED_REGISTRY=$(REGISTRY) SEEDBED_IMAGE_TAG=$(TAG) $(PYTHON) -m components._images
IMAGE_NAMES := $(shell $(IMAGES_PY) --list | cut -d' ' -f1)
ifeq ($(strip $(IMAGE_NAMES)),)
$(error cannot list the images: `$(IMAGES_PY) --list` failed)
endif
ref = $(shell $(IMAGES_PY) --ref $(1))
dockerfile = $(shell $(IMAGES_PY) --dockerfile $(1))

BUILDS := $(addprefix image-build-,$(IMAGE_NAMES))
PUSHES := $(addprefix image-push-,$(IMAGE_NAMES))

.PHONY: images images-build images-push images-list $(BUILDS) $(PUSHES)

# push only after every build succeeded
images: images-build
	$(MAKE) images-push

images-build: $(BUILDS)

images-push: $(PUSHES)

images-list:
	@$(IMAGES_PY) --list

$(BUILDS): image-build-%:
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) -f $(call dockerfile,$*) -t $(call ref,$*) .

$(PUSHES): image-push-%:
	$(DOCKER) push $(call ref,$*)

# The evidence of docs/results.md: five experiments on the real ../shared/data, then the tables
# and plots (docs/results/). Each resumes: rerun to finish an interrupted one. About 3 h on 2 CPU
# cores (docs/results.md lists each experiment's time). `bash scripts/env.sh` makes .venv first.
#
#   make reproduce                       # all five + report
#   make reproduce-betr REPRO_WORK=/scratch/repro
REPRO_PY ?= .venv/bin/python
REPRO_WORK ?= runs/reproduce
REPRO = benchmarks/reproduce

.PHONY: reproduce reproduce-betr reproduce-keep-rate reproduce-growth reproduce-upsampling reproduce-mixture reproduce-report

reproduce: reproduce-betr reproduce-keep-rate reproduce-growth reproduce-upsampling reproduce-mixture
	$(MAKE) reproduce-report

reproduce-betr:
	$(REPRO_PY) $(REPRO)/betr_vs_random.py --work $(REPRO_WORK)/betr

reproduce-keep-rate: reproduce-betr
	$(REPRO_PY) $(REPRO)/keep_rate.py --work $(REPRO_WORK)/betr

reproduce-growth:
	$(REPRO_PY) $(REPRO)/growth.py --work $(REPRO_WORK)

reproduce-upsampling:
	$(REPRO_PY) $(REPRO)/upsampling.py --work $(REPRO_WORK)/upsampling

reproduce-mixture:
	$(REPRO_PY) $(REPRO)/mixture_law.py --work $(REPRO_WORK)/mixture-law

reproduce-report:
	$(REPRO_PY) $(REPRO)/report.py --work $(REPRO_WORK) --out docs/results
