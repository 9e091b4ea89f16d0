# The protobuf-c code for docs/eraftpb.proto and docs/qraft_wire.proto, as a
# static library `qraft_eraftpb_pbc`: the oracle of the wire property tests
# and the baseline of the wire benchmark. The qraft library never links it.
if(TARGET qraft_eraftpb_pbc)
  return()
endif()
find_program(QRAFT_PROTOC_C protoc-c REQUIRED)
pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET libprotobuf-c)
set(qraft_pbc_out ${CMAKE_BINARY_DIR}/pbc)
set(qraft_pbc_files
  ${qraft_pbc_out}/eraftpb.pb-c.c ${qraft_pbc_out}/eraftpb.pb-c.h
  ${qraft_pbc_out}/qraft_wire.pb-c.c ${qraft_pbc_out}/qraft_wire.pb-c.h)
add_custom_command(OUTPUT ${qraft_pbc_files}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${qraft_pbc_out}
  COMMAND ${QRAFT_PROTOC_C} -I${CMAKE_SOURCE_DIR}/docs --c_out=${qraft_pbc_out}
          eraftpb.proto qraft_wire.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/docs/eraftpb.proto
          ${CMAKE_SOURCE_DIR}/docs/qraft_wire.proto
  COMMENT "protoc-c: eraftpb.proto qraft_wire.proto")
add_library(qraft_eraftpb_pbc STATIC
  ${qraft_pbc_out}/eraftpb.pb-c.c ${qraft_pbc_out}/qraft_wire.pb-c.c)
target_include_directories(qraft_eraftpb_pbc PUBLIC ${qraft_pbc_out})
# Generated code: not ours to hold to -Werror.
target_compile_options(qraft_eraftpb_pbc PRIVATE -w)
target_link_libraries(qraft_eraftpb_pbc PUBLIC PkgConfig::PROTOBUF_C)
