# Cross-compiling the CPU backend for ARM64 Linux (aarch64-linux-gnu) with Debian's cross toolchain
# (g++-aarch64-linux-gnu). scripts/arm64_check.sh unpacks the arm64 libraries the build links (BLIS,
# GoogleTest, SentencePiece) into DSA_ARM64_SYSROOT and runs the test binary under qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# try_compile projects see the variable through CMAKE_TRY_COMPILE_PLATFORM_VARIABLES.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES DSA_ARM64_SYSROOT)
if(NOT DSA_ARM64_SYSROOT)
  message(FATAL_ERROR "aarch64-linux-gnu.cmake: set DSA_ARM64_SYSROOT to the folder holding the unpacked arm64 packages")
endif()
# The unpacked packages are searched before the cross toolchain's own folder; programs come from the host.
set(CMAKE_FIND_ROOT_PATH ${DSA_ARM64_SYSROOT} /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config (SentencePiece) reads the arm64 .pc files, with their paths moved into the sysroot.
set(ENV{PKG_CONFIG_LIBDIR} "${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${DSA_ARM64_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")
# ctest (and gtest_discover_tests) run the ARM64 binaries through the emulator; the emulated loader
# finds the toolchain's libraries (-L) and the unpacked ones (LD_LIBRARY_PATH; qemu-aarch64-static is
# a static host program, so the variable reaches only the guest's loader).
set(CMAKE_CROSSCOMPILING_EMULATOR env
    "LD_LIBRARY_PATH=${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu:${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/blis-openmp"
    qemu-aarch64-static -L /usr/aarch64-linux-gnu)
# Libraries outside the toolchain's folder (SentencePiece is linked by plain name) come from the sysroot.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-L${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,-rpath-link,${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-L${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,-rpath-link,${DSA_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu")
