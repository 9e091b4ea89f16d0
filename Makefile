# The commands people use. CMake does the building; this file picks the
# variant and the build folder.
#
#   make            release build (-O2 -g, assertions on) in build/
#   make test       dependencies, ASan+UBSan build and every test, then the
#                   ThreadSanitizer build and the threaded tests, the fuzz
#                   smoke runs, and SIM_FULL_SEEDS seeds of the full-stack
#                   simulation on the release build
#   make demo       the demonstration (scripts/demo.sh)
#   make bench      benchmarks, printed with ratios against baselines
#   make fuzz       long fuzzing runs (FUZZ_SECONDS per target)
#   make fuzz-build the libFuzzer binaries in build/fuzz/
#   make soak       long simulations and crash tests (SEEDS, FULL_SEEDS,
#                   KILLS, CUTS)
#   make canaries   plant each known bug and check the simulator catches it
#   make install    headers, libraries and qraft.pc (PREFIX, DESTDIR)
#   make clean

JOBS    ?= $(shell nproc)
PREFIX  ?= /usr/local
SEEDS   ?= 20000
SIM_FULL_SEEDS ?= 300
KILLS   ?= 5000
CUTS    ?= 60
FULL_SEEDS ?=
FUZZ_SECONDS ?= 600
CMAKE_FLAGS ?=

REL   := build
ASAN  := build/asan
TSAN  := build/tsan
FUZZT := build/fuzz-tree

.PHONY: all release test test-asan test-tsan test-fuzz test-sim-full demo bench fuzz fuzz-build soak \
        canaries install deps clean

all: release

deps:
	@bash scripts/deps.sh

# A tree is configured once CMake generated its Makefile (it writes its
# cache before, so a configure that failed midway leaves a cache and no
# Makefile: the next make configures again).
$(REL)/Makefile:
	cmake -S . -B $(REL) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

release: $(REL)/Makefile
	cmake --build $(REL) -j $(JOBS)

$(ASAN)/Makefile:
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DQRAFT_SANITIZE=asan \
	  -DCMAKE_C_FLAGS=-O1 -DCMAKE_CXX_FLAGS=-O1 $(CMAKE_FLAGS)

$(TSAN)/Makefile:
	cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=Debug -DQRAFT_SANITIZE=tsan \
	  -DCMAKE_C_FLAGS=-O1 -DCMAKE_CXX_FLAGS=-O1 -DQRAFT_BUILD_BENCH=OFF \
	  $(CMAKE_FLAGS)

FUZZ_SMOKE_SECONDS ?= 20

test: deps test-asan test-tsan test-fuzz test-sim-full

# The full-stack simulation takes seconds a seed under ASan (the ASan tree
# runs a few); the release build runs many.
test-sim-full: release
	@JOBS=$(JOBS) bash tests/sim/full_release.sh $(REL) $(SIM_FULL_SEEDS)
	@# The large-state test's memory bound holds in the release build only
	@# (ASan keeps freed memory in quarantine): run it there too.
	cd $(REL) && ctest --output-on-failure -R e2e_kv_bigstate

# Replays the committed fuzz corpora and fuzzes each target briefly.
test-fuzz:
	@bash scripts/fuzz.sh smoke $(FUZZT) $(FUZZ_SMOKE_SECONDS)

test-asan: $(ASAN)/Makefile
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS) --timeout 1500 -LE tsan-only

test-tsan: $(TSAN)/Makefile
	cmake --build $(TSAN) -j $(JOBS)
	cd $(TSAN) && ctest --output-on-failure -j $(JOBS) --timeout 1500 -L threads

demo: deps release
	@bash scripts/demo.sh

bench: deps release
	@bash scripts/bench.sh $(REL)

fuzz-build: deps
	@bash scripts/fuzz.sh build $(FUZZT)

fuzz: fuzz-build
	@bash scripts/fuzz.sh run $(FUZZT) $(FUZZ_SECONDS)

soak: deps release
	@SEEDS=$(SEEDS) FULL_SEEDS=$(FULL_SEEDS) KILLS=$(KILLS) CUTS=$(CUTS) \
	  bash scripts/soak.sh $(REL)

canaries: deps
	@bash scripts/canaries.sh

install: release
	DESTDIR=$(DESTDIR) cmake --install $(REL) --prefix $(PREFIX)

clean:
	rm -rf build
