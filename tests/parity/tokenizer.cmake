# Byte-level BPE tokenizer against the Python `tokenizers` library (GPT-2 and trained Llama-3 /
# Qwen2-style tokenizers). Included from tests/CMakeLists.txt.
add_executable(tokenizer_tool ${CMAKE_CURRENT_LIST_DIR}/tokenizer_tool.cpp)
target_link_libraries(tokenizer_tool PRIVATE aln_core_tokenizer nlohmann_json::nlohmann_json)
aln_warnings(tokenizer_tool)
add_test(NAME tokenizer_parity COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/tokenizer_parity.py
                                       $<TARGET_FILE:tokenizer_tool>)
set_tests_properties(tokenizer_parity PROPERTIES LABELS "parity" WORKING_DIRECTORY ${PROJECT_SOURCE_DIR} TIMEOUT 120)
