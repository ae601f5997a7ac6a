# Writes the version header (DS_VERSION, DS_GIT_SHA) at build time, so that --version names the
# commit that was built, not the one CMake last configured. configure_file leaves the header
# untouched when its text is unchanged, so only a new commit recompiles its includers.
# Run as: cmake -DSOURCE_DIR=... -DOUT=... -DPROJECT_VERSION=... -P cmake/version.cmake
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE DS_GIT_SHA
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT DS_GIT_SHA)
  set(DS_GIT_SHA "unknown")
endif()
configure_file(${SOURCE_DIR}/cmake/version.hpp.in ${OUT} @ONLY)
