# Writes the version header (DS_VERSION, DS_GIT_SHA) at build time, so that --version names the
# commit that was built, not the one CMake last configured: the SHA of HEAD, "-dirty" when the
# tracked files differ from it, "unknown" outside a git checkout of this source tree (a tarball,
# also one unpacked inside another repository). configure_file leaves the header untouched when
# its text is unchanged, so only a change of these recompiles its includers.
# Run as: cmake -DSOURCE_DIR=... -DOUT=... -DPROJECT_VERSION=... -P cmake/version.cmake
set(DS_GIT_SHA "unknown")
execute_process(COMMAND git rev-parse --show-toplevel
  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE top
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(rc EQUAL 0)
  get_filename_component(top "${top}" REALPATH)
  get_filename_component(src "${SOURCE_DIR}" REALPATH)
  if(top STREQUAL src)
    execute_process(COMMAND git rev-parse --short=12 HEAD
      WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE sha
      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND sha)
      set(DS_GIT_SHA "${sha}")
      execute_process(COMMAND git diff --quiet HEAD --
        WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE dirty ERROR_QUIET)
      if(dirty EQUAL 1)
        string(APPEND DS_GIT_SHA "-dirty")
      endif()
    endif()
  endif()
endif()
configure_file(${SOURCE_DIR}/cmake/version.hpp.in ${OUT} @ONLY)
