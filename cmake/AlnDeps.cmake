# Real dependencies, all from Debian packages (scripts/setup.sh installs them).
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
if(ALN_BUILD_LAUNCHER)
  find_package(gRPC CONFIG REQUIRED)
  find_package(SQLite3 REQUIRED)
endif()
find_package(absl CONFIG REQUIRED)
# prometheus-cpp ships no version file: asking for a version fails.
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)

# Open MPI's deprecated C++ bindings break linking when mpi.h is seen from C++.
target_compile_definitions(MPI::MPI_C INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)

# yaml-cpp's Debian config exports either `yaml-cpp` or `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(ALN_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(ALN_YAML_TARGET yaml-cpp)
endif()

if(ALN_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(ALN_BUILD_BENCH)
  # Google Benchmark drives the two microbenchmarks (bench_token_logprobs, bench_linear); the rest of
  # bench/ builds without it (the GPU machine's image lacks it: ../shared/DEVICE.md).
  find_package(benchmark CONFIG QUIET)
  if(NOT benchmark_FOUND)
    message(STATUS "Google Benchmark not found: bench_token_logprobs and bench_linear are left out")
  endif()
endif()

set(ALN_GRPC_VERSION "${gRPC_VERSION}")
if(NOT ALN_BUILD_LAUNCHER)
  set(ALN_GRPC_VERSION "not built")
endif()
set(ALN_PROTOBUF_VERSION "${Protobuf_VERSION}")
