# Every third-party dependency is found here, once. All come from Debian packages
# (scripts/install-deps.sh installs them): CLI11, spdlog+fmt, zstd, doctest, OpenBLAS,
# nlohmann-json, PCRE2, Open MPI, OpenMP.
find_package(Threads REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(doctest CONFIG REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(DS_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas openblas-pthread REQUIRED)
find_package(MPI COMPONENTS CXX)
