# qraft_add_test(NAME name SOURCES a.c ... [LIBS ...] [LABELS ...]
#                [TIMEOUT s] [ARGS ...])
# Builds a test executable linked with qraft and cmocka, and registers it
# with CTest under `name`. Label "threads" marks tests that also run in the
# ThreadSanitizer build.
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)

function(qraft_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_include_directories(${T_NAME} PRIVATE ${CMAKE_SOURCE_DIR}/src
    ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(${T_NAME} PRIVATE qraft::qraft PkgConfig::CMOCKA ${T_LIBS})
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
    ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}")
endfunction()
