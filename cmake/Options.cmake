# ds_options: the interface target every ds target links (warnings, defines, include dirs).
add_library(ds_options INTERFACE)
target_include_directories(ds_options INTERFACE
  ${CMAKE_SOURCE_DIR}/include ${CMAKE_BINARY_DIR}/generated)
target_compile_options(ds_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${DS_WERROR}>>:-Werror>)
target_compile_definitions(ds_options INTERFACE
  $<$<CONFIG:Release>:SPDLOG_ACTIVE_LEVEL=SPDLOG_LEVEL_DEBUG>)

# ds_add_tool(NAME SOURCES... LINK libs...): a thin executable in build/bin.
function(ds_add_tool name)
  cmake_parse_arguments(T "" "" "SOURCES;LINK" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ds_options ds_cli ${T_LINK})
endfunction()

if(DS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DS_FUZZ=ON needs clang (CXX=clang++)")
  endif()
  # UBSan too, fatal (no recovery), so that an overflow or a bad shift counts as a crash
  target_compile_options(ds_options INTERFACE -fsanitize=address,undefined,fuzzer-no-link
                         -fno-sanitize-recover=all -g)
  target_compile_definitions(ds_options INTERFACE FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
  target_link_options(ds_options INTERFACE -fsanitize=address,undefined)
endif()
