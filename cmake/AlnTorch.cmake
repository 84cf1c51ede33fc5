# LibTorch, found through Torch_DIR (<torch root>/share/cmake/Torch).
#
# Default: the C++ library inside the pinned PyTorch wheel of the project venv (scripts/setup.sh
# installs it; scripts/build.sh passes Torch_DIR). Any other LibTorch 2.x works the same way: point
# Torch_DIR at it (for example an unzipped libtorch or a CUDA build on a cluster).
#
# Why not plain find_package(Torch): the wheel from the Python package index is a CUDA build, and its
# TorchConfig pulls in libtorch_cuda, which needs CUDA runtime libraries matching the wheel (cuSPARSELt,
# NVSHMEM, ... that the toolkit in /usr/local/cuda does not have). Aln's own CUDA kernels do not go
# through ATen's CUDA backend, so by default we link only the CPU parts (torch_cpu + c10), which load
# anywhere. Set ALN_TORCH_FIND_PACKAGE=ON to use the stock TorchConfig instead (a LibTorch whose CUDA
# libraries are installed, when ATen CUDA tensors are wanted).
option(ALN_TORCH_FIND_PACKAGE "Use LibTorch's own TorchConfig.cmake (links torch_cuda when present)" OFF)

if(NOT Torch_DIR)
  set(Torch_DIR "$ENV{Torch_DIR}")
endif()
if(NOT Torch_DIR)
  message(FATAL_ERROR "LibTorch not found: run scripts/setup.sh (installs the pinned wheel into .venv) "
                      "or pass -DTorch_DIR=<libtorch>/share/cmake/Torch for your own LibTorch 2.x.")
endif()
get_filename_component(ALN_TORCH_ROOT "${Torch_DIR}/../../.." ABSOLUTE)
if(NOT EXISTS "${ALN_TORCH_ROOT}/include/ATen/ATen.h")
  message(FATAL_ERROR "Torch_DIR=${Torch_DIR} does not look like LibTorch: ${ALN_TORCH_ROOT}/include/ATen/ATen.h is missing.")
endif()

# Version from the generated header; its location moved between 2.x releases (torch/version.h,
# later torch/headeronly/version.h), so read whichever exists.
set(ALN_TORCH_VERSION "")
foreach(_h "${ALN_TORCH_ROOT}/include/torch/headeronly/version.h"
           "${ALN_TORCH_ROOT}/include/torch/csrc/api/include/torch/version.h")
  if(EXISTS "${_h}" AND NOT ALN_TORCH_VERSION)
    file(STRINGS "${_h}" _tv REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
    if(_tv)
      string(REGEX MATCH "MAJOR ([0-9]+)" _ "${_tv}")
      set(_maj ${CMAKE_MATCH_1})
      string(REGEX MATCH "MINOR ([0-9]+)" _ "${_tv}")
      set(_min ${CMAKE_MATCH_1})
      string(REGEX MATCH "PATCH ([0-9]+)" _ "${_tv}")
      set(ALN_TORCH_VERSION "${_maj}.${_min}.${CMAKE_MATCH_1}")
    endif()
  endif()
endforeach()
if(NOT ALN_TORCH_VERSION MATCHES "^2\\.")
  message(FATAL_ERROR "Aln needs LibTorch 2.x, found '${ALN_TORCH_VERSION}' at ${ALN_TORCH_ROOT}")
endif()

set(ALN_TORCH_INCLUDE_DIR "${ALN_TORCH_ROOT}/include")  # the folder Aln's targets see LibTorch's headers in
if(ALN_TORCH_FIND_PACKAGE)
  find_package(Torch REQUIRED)
  add_library(aln_torch INTERFACE)
  target_link_libraries(aln_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_options(aln_torch INTERFACE ${TORCH_CXX_FLAGS})
else()
  find_library(ALN_TORCH_CPU_LIB torch_cpu PATHS "${ALN_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(ALN_C10_LIB c10 PATHS "${ALN_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  # The C++ ABI LibTorch was built with; mixing the two ABIs links but fails at run time.
  set(_abi 1)
  if(EXISTS "${Torch_DIR}/TorchConfig.cmake")
    file(STRINGS "${Torch_DIR}/TorchConfig.cmake" _abi_line REGEX "_GLIBCXX_USE_CXX11_ABI=[01]")
    if(_abi_line MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
      set(_abi 0)
    endif()
  endif()
  # LibTorch's include folder also carries the protobuf headers it was built with (3.21.12 in 2.15's
  # wheel, 3.13 in 2.11's), which come before the system's in the search and would take the place of
  # the ones Aln's generated messages need (a 2.11 build fails on every .pb.h). So the folder is
  # stood in for by one of links to all its entries but `google`.
  set(_torch_include "${CMAKE_BINARY_DIR}/torch_include")
  file(REMOVE_RECURSE "${_torch_include}")
  file(MAKE_DIRECTORY "${_torch_include}")
  file(GLOB _torch_entries RELATIVE "${ALN_TORCH_ROOT}/include" "${ALN_TORCH_ROOT}/include/*")
  foreach(_entry IN LISTS _torch_entries)
    if(NOT _entry STREQUAL "google")
      file(CREATE_LINK "${ALN_TORCH_ROOT}/include/${_entry}" "${_torch_include}/${_entry}" SYMBOLIC)
    endif()
  endforeach()
  set(ALN_TORCH_INCLUDE_DIR "${_torch_include}")
  add_library(aln_torch INTERFACE)
  target_include_directories(aln_torch SYSTEM INTERFACE
    "${_torch_include}" "${_torch_include}/torch/csrc/api/include")
  target_link_libraries(aln_torch INTERFACE "${ALN_TORCH_CPU_LIB}" "${ALN_C10_LIB}" Threads::Threads)
  target_compile_definitions(aln_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_abi})
endif()
# Binaries find LibTorch without LD_LIBRARY_PATH.
set(CMAKE_BUILD_RPATH "${ALN_TORCH_ROOT}/lib")
set(CMAKE_INSTALL_RPATH "${ALN_TORCH_ROOT}/lib")
