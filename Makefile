# pg_safe_upgrade: top-level build.
#   make          build the extension (PGXS), the agent and the CLI (CMake, in $(BUILD_DIR))
#   make install  install the extension into PostgreSQL's directories and the binaries into $(PREFIX)/bin
#   make check    the whole test suite (installs what it needs when run as root)
#   make demo     the main job on a sandbox
#   make bench    side-by-side benchmarks (not part of check)
PREFIX ?= /usr/local
BUILD_DIR ?= $(CURDIR)/build
PG_CONFIG ?= pg_config
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Debian packages the build, the tests and the demo need.
DEB_PACKAGES = build-essential cmake pkg-config postgresql-15 postgresql-contrib-15 postgresql-server-dev-15 \
  libpq-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libspdlog-dev \
  libgtest-dev libgmock-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libcurl4-openssl-dev \
  postgresql-15-postgis-3 postgresql-15-postgis-3-scripts openssl pgbackrest gnuplot-nox jq xfsprogs \
  patroni etcd-server

.PHONY: all cmake-build extension fixtures install install-extension deps object-store-deps check unit-check regress-check demo bench clean

all: cmake-build extension

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# The S3-compatible object store the pgBackRest tests serve (tests/harness/object_store.h): the
# npm package pinned in tests/object_store/package-lock.json, installed next to it. Node and npm
# are checked as commands, not Debian packages: a NodeSource nodejs bundles npm and conflicts
# with Debian's npm package.
OBJECT_STORE_DIR = tests/object_store
object-store-deps: deps $(OBJECT_STORE_DIR)/node_modules/.package-lock.json

$(OBJECT_STORE_DIR)/node_modules/.package-lock.json: $(OBJECT_STORE_DIR)/package.json $(OBJECT_STORE_DIR)/package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; \
	  else \
	    echo "node and npm are missing; run:"; echo "  sudo apt-get install -y nodejs npm"; exit 1; \
	  fi; \
	fi
	CI=true npm ci --prefix $(OBJECT_STORE_DIR) --no-audit --no-fund --loglevel=error </dev/null
	touch $@

$(BUILD_DIR)/CMakeCache.txt: CMakeLists.txt
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo

cmake-build: $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

extension: cmake-build
	$(MAKE) -C extension BUILD_DIR=$(BUILD_DIR) PG_CONFIG=$(PG_CONFIG)

fixtures:
	$(MAKE) -C tests/fixtures PG_CONFIG=$(PG_CONFIG)

install-extension: extension
	$(MAKE) -C extension install BUILD_DIR=$(BUILD_DIR) PG_CONFIG=$(PG_CONFIG)

install: install-extension
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# The tests need the extension and the fixture extensions in PostgreSQL's directories, which
# only root can write. As another user, install them first with sudo.
check-install:
	@if [ -w "$$($(PG_CONFIG) --pkglibdir)" ]; then \
	  $(MAKE) install-extension && $(MAKE) -C tests/fixtures install PG_CONFIG=$(PG_CONFIG); \
	else \
	  echo "note: cannot write $$($(PG_CONFIG) --pkglibdir); if the tests cannot find the extension, run:"; \
	  echo "  sudo make install-extension && sudo make -C tests/fixtures install"; \
	fi

check: deps object-store-deps all check-install
	cd $(BUILD_DIR) && ctest --output-on-failure -j 2 --timeout 900
	tests/regress/run.sh
	tests/docs_check.sh
	tests/layout_check.sh

unit-check: all
	cd $(BUILD_DIR) && ctest --output-on-failure -L unit

regress-check: deps all check-install
	tests/regress/run.sh

demo: deps all check-install
	BUILD_DIR=$(BUILD_DIR) tests/demo/run.sh

bench: deps all check-install
	bench/run.sh

clean:
	rm -rf $(BUILD_DIR)
	$(MAKE) -C extension clean BUILD_DIR=$(BUILD_DIR)
