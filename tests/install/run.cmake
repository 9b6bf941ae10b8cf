# ctest -R install_consumer: installs the built dsa into a scratch prefix, then configures, builds
# and runs tests/install/consumer against it with find_package(dsa). The consumer is a CPU-only
# project: with -DHIDE_CUDA=ON its configure step cannot find a CUDA toolkit (how a CPU-only machine
# sees a CUDA-enabled install), and it must still configure, link and run.
if(NOT DEFINED HIDE_CUDA)
  set(HIDE_CUDA OFF)
endif()
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake needs -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/build
                        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release
                        -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=${HIDE_CUDA}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer with find_package(dsa) failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
file(GLOB_RECURSE targets_file ${WORK_DIR}/prefix/*/dsaTargets.cmake)
file(STRINGS ${targets_file} abs_lines REGEX "${BUILD_DIR}|/usr/lib/[^ ;]*\\.so")
if(abs_lines)
  message(FATAL_ERROR "the exported targets name absolute library paths: ${abs_lines}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer ${WORK_DIR}/model RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the consumer's check failed (${rc})")
endif()
