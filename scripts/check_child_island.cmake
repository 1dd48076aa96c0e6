# cmake -DNM=<nm> -DOBJECTS=<objects> -P check_child_island.cmake
# Fails when an object of the child island has any undefined symbol: the code that runs between
# clone and exec must not call libc (locks, errno, the parent's TLS) nor instrumentation.
if(NOT NM OR NOT OBJECTS)
  message(FATAL_ERROR "usage: cmake -DNM=<nm> -DOBJECTS=<objects> -P check_child_island.cmake")
endif()
foreach(object IN LISTS OBJECTS)
  if(NOT EXISTS "${object}")
    message(FATAL_ERROR "${object} does not exist (build the library first)")
  endif()
  execute_process(COMMAND "${NM}" -u "${object}" OUTPUT_VARIABLE undefined RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} -u ${object} failed (${rc})")
  endif()
  string(STRIP "${undefined}" undefined)
  if(undefined)
    message(FATAL_ERROR "the child island references symbols it must not call:\n${undefined}\n"
                        "(in ${object})")
  endif()
  message(STATUS "${object}: no undefined symbol")
endforeach()
