# ccache makes the warm rebuilds on 2 cores cheap; it is optional.
find_program(ALN_CCACHE ccache)
if(ALN_CCACHE)
  set(CMAKE_C_COMPILER_LAUNCHER "${ALN_CCACHE}")
  set(CMAKE_CXX_COMPILER_LAUNCHER "${ALN_CCACHE}")
  set(CMAKE_CUDA_COMPILER_LAUNCHER "${ALN_CCACHE}")
endif()

# __FILE__ relative to the repo: error messages and logs show "core/x.cpp:12", not a build path.
add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fmacro-prefix-map=${PROJECT_SOURCE_DIR}/=>)

# Warnings on for our own code only (applied per target, so third-party headers stay quiet
# because they are included as SYSTEM).
function(aln_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()

# Adds a library of one layer with the repo root as include root ("core/error.h").
function(aln_library name)
  cmake_parse_arguments(A "" "" "SOURCES;PUBLIC;PRIVATE" ${ARGN})
  add_library(${name} ${A_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${A_PUBLIC} PRIVATE ${A_PRIVATE})
  aln_warnings(${name})
endfunction()
