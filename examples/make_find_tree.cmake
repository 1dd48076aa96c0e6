# Makes the tree example_exec_find runs `find` over: 200 directories of 200 files, whose names make
# find print well over 1 MiB whatever the tree's own path is (40 000 lines of at least 40 bytes).
# `find /` itself is not enough on every machine: on a small one it printed 742 866 bytes.
# Usage: cmake -DTREE=<dir> -P make_find_tree.cmake (does nothing when the tree is complete).
if(NOT TREE)
  message(FATAL_ERROR "make_find_tree.cmake: pass -DTREE=<dir>")
endif()
if(EXISTS "${TREE}/complete")
  return()
endif()
set(names "")
foreach(i RANGE 1 200)
  list(APPEND names "a-file-whose-name-is-long-enough-${i}")
endforeach()
foreach(d RANGE 1 200)
  set(dir "${TREE}/directory-${d}")
  file(MAKE_DIRECTORY "${dir}")
  list(TRANSFORM names PREPEND "${dir}/" OUTPUT_VARIABLE files)
  file(TOUCH ${files})
endforeach()
file(TOUCH "${TREE}/complete")
