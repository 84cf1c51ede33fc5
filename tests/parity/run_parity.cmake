# Whole training runs against TRL (tests/parity/*_run_parity.py): the same tiny model, data and batch
# order trained 10 steps by `aln train` and by TRL's DPOTrainer / SFTTrainer. Included from
# tests/CMakeLists.txt.
add_executable(batch_order_tool ${CMAKE_CURRENT_LIST_DIR}/batch_order_tool.cpp)
target_link_libraries(batch_order_tool PRIVATE aln_trainers nlohmann_json::nlohmann_json)
target_include_directories(batch_order_tool PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
aln_warnings(batch_order_tool)
foreach(method dpo sft)
  add_test(NAME ${method}_run_parity
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/${method}_run_parity.py $<TARGET_FILE:aln>
                   $<TARGET_FILE:batch_order_tool>)
  set_tests_properties(${method}_run_parity PROPERTIES LABELS "parity" WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                                                       TIMEOUT 300)
endforeach()
