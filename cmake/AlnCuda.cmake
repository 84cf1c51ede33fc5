# CUDA kernels and NCCL. ALN_WITH_CUDA=AUTO compiles them whenever nvcc is found (it is, here, in
# /usr/local/cuda, though no GPU exists: the code compiles and links, and tests that need a device
# skip at run time). OFF or no nvcc: CUDA sources are left out and stub files keep the build linking.
set(ALN_CUDA_ENABLED OFF)
set(ALN_NCCL_VERSION_STRING "none")
if(NOT ALN_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # No GPU here, so "native" cannot work; CUDA 13 supports sm_75 and newer.
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    find_package(CUDAToolkit REQUIRED)
    # A CUDA build of LibTorch (the pip wheel) brings its own NCCL and CUDA runtime, and a job that
    # asks for a GPU loads its CUDA library with them (core/model/device.h). A process holds one
    # library per soname (libnccl.so.2, libcudart.so.13), and LibTorch's needs symbols an older
    # toolkit's lack, so Aln uses the wheel's when they are there: their directories go first in the
    # run path, and NCCL's header and library are taken from there. Otherwise the toolkit's.
    get_filename_component(_wheel_nvidia "${ALN_TORCH_ROOT}/../nvidia" ABSOLUTE)
    file(GLOB _wheel_cudart "${_wheel_nvidia}/cu*/lib/libcudart.so.*")
    if(EXISTS "${_wheel_nvidia}/nccl/include/nccl.h" AND EXISTS "${_wheel_nvidia}/nccl/lib/libnccl.so.2")
      set(ALN_NCCL_INCLUDE "${_wheel_nvidia}/nccl/include")
      set(ALN_NCCL_LIB "${_wheel_nvidia}/nccl/lib/libnccl.so.2")
      list(APPEND CMAKE_BUILD_RPATH "${_wheel_nvidia}/nccl/lib")
      list(APPEND CMAKE_INSTALL_RPATH "${_wheel_nvidia}/nccl/lib")
    else()
      # NCCL ships inside the toolkit tree here, without a CMake package.
      find_path(ALN_NCCL_INCLUDE nccl.h HINTS "${CUDAToolkit_INCLUDE_DIRS}" /usr/local/cuda/include)
      find_library(ALN_NCCL_LIB nccl HINTS "${CUDAToolkit_LIBRARY_DIR}" /usr/local/cuda/lib64)
    endif()
    if(_wheel_cudart)
      list(GET _wheel_cudart 0 _cudart)
      get_filename_component(_cudart_dir "${_cudart}" DIRECTORY)
      list(APPEND CMAKE_BUILD_RPATH "${_cudart_dir}")
      list(APPEND CMAKE_INSTALL_RPATH "${_cudart_dir}")
    endif()
    if(NOT ALN_NCCL_INCLUDE OR NOT ALN_NCCL_LIB)
      message(FATAL_ERROR "CUDA is on but NCCL was not found (nccl.h / libnccl.so next to the toolkit). "
                          "Install NCCL or configure with -DALN_WITH_CUDA=OFF.")
    endif()
    add_library(aln_nccl INTERFACE)
    target_include_directories(aln_nccl SYSTEM INTERFACE "${ALN_NCCL_INCLUDE}")
    target_link_libraries(aln_nccl INTERFACE "${ALN_NCCL_LIB}" CUDA::cudart)
    file(STRINGS "${ALN_NCCL_INCLUDE}/nccl.h" _nv REGEX "#define NCCL_(MAJOR|MINOR|PATCH) ")
    string(REGEX MATCH "NCCL_MAJOR ([0-9]+)" _ "${_nv}")
    set(_maj ${CMAKE_MATCH_1})
    string(REGEX MATCH "NCCL_MINOR ([0-9]+)" _ "${_nv}")
    set(_min ${CMAKE_MATCH_1})
    string(REGEX MATCH "NCCL_PATCH ([0-9]+)" _ "${_nv}")
    set(ALN_NCCL_VERSION_STRING "${_maj}.${_min}.${CMAKE_MATCH_1}")
    set(ALN_CUDA_ENABLED ON)
    set(ALN_CUDA_VERSION_STRING "${CUDAToolkit_VERSION}")
    # What `aln version` reports: the architectures the kernels were compiled for, as configured (an
    # entry without -real also carries PTX, which newer GPUs compile at load).
    string(REPLACE ";" ", " ALN_CUDA_ARCHITECTURES_STRING "${CMAKE_CUDA_ARCHITECTURES}")
  elseif(ALN_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ALN_WITH_CUDA=ON but no CUDA compiler (nvcc) was found. Set CUDACXX or use AUTO/OFF.")
  endif()
endif()
