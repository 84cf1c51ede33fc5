# Our safetensors reader/writer (core/io/) against Python's safetensors and huggingface_hub, both
# directions (values, bytes, shard splits, rejected files). Included from tests/CMakeLists.txt.
add_executable(safetensors_tool ${CMAKE_CURRENT_LIST_DIR}/safetensors_tool.cpp)
target_link_libraries(safetensors_tool PRIVATE aln_core_io nlohmann_json::nlohmann_json)
aln_warnings(safetensors_tool)
add_test(NAME safetensors_parity COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/safetensors_parity.py
                                         $<TARGET_FILE:safetensors_tool>)
set_tests_properties(safetensors_parity PROPERTIES LABELS "parity" TIMEOUT 60)
