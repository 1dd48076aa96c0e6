# childproc_add_worker(<target> [LINK STATIC|STATIC_RUNTIME|DYNAMIC] <source>...)
#   An executable that is a childproc worker (serve(), parent_channel()), linked so that it starts
#   like a C program: a fork() -> first message cost ~1 ms of CPU less (docs/bench/worker-startup.md).
# childproc_worker_link_options(<target> [LINK ...])
#   The same link for an executable you already have (a program that is its own pool worker),
#   instead of target_link_libraries(<target> childproc::childproc): a static link cannot take
#   the shared Boost.JSON that childproc::childproc names.
#
# LINK (default ${CHILDPROC_WORKER_LINK}, else STATIC; DYNAMIC when the build has sanitizers):
#   STATIC          -static -Wl,--gc-sections: no dynamic loader at all, no symbol lookups, the
#                   fewest pages. What measures best (CPU and RSS); the executable carries glibc,
#                   libstdc++ and Boost.JSON (1.5 MB for a small worker).
#   STATIC_RUNTIME  libstdc++, libgcc and Boost.JSON static, glibc shared (for code that needs
#                   glibc's NSS or dlopen()).
#   DYNAMIC         the ordinary link (sanitizers need it).
# Static linking needs libchildproc and Boost.JSON as static archives; without them the link
# falls back to DYNAMIC and says so.

function(_childproc_worker_archive out name)
  get_target_property(location Boost::json LOCATION)
  get_filename_component(dir "${location}" DIRECTORY)
  find_library(CHILDPROC_${name}_ARCHIVE NAMES lib${name}.a HINTS "${dir}" NO_CACHE)
  set(${out} "${CHILDPROC_${name}_ARCHIVE}" PARENT_SCOPE)
endfunction()

function(childproc_worker_link_options target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "LINK" "")
  set(link "${arg_LINK}")
  if(NOT link)
    set(link "${CHILDPROC_WORKER_LINK}")
  endif()
  if(NOT link)
    set(link STATIC)
    if(CHILDPROC_SANITIZE)
      set(link DYNAMIC)
    endif()
  endif()
  if(NOT link MATCHES "^(STATIC|STATIC_RUNTIME|DYNAMIC)$")
    message(FATAL_ERROR "childproc_add_worker(${target}): LINK must be STATIC, STATIC_RUNTIME or DYNAMIC, not '${link}'")
  endif()
  get_target_property(library_type childproc::childproc TYPE)
  if(NOT link STREQUAL "DYNAMIC")
    _childproc_worker_archive(json_archive boost_json)
    _childproc_worker_archive(container_archive boost_container)
    if(NOT library_type STREQUAL "STATIC_LIBRARY" OR NOT json_archive OR NOT container_archive)
      message(STATUS "childproc_add_worker(${target}): libchildproc or Boost.JSON is not a static archive: linked DYNAMIC")
      set(link DYNAMIC)
    endif()
  endif()
  set_target_properties(${target} PROPERTIES CHILDPROC_WORKER_LINK ${link})
  if(link STREQUAL "DYNAMIC")
    target_link_libraries(${target} PRIVATE childproc::childproc)
    return()
  endif()
  # childproc's usage requirements without its link to the shared Boost.JSON, which a static link
  # cannot take: the archives instead.
  target_include_directories(${target} PRIVATE
    $<TARGET_PROPERTY:childproc::childproc,INTERFACE_INCLUDE_DIRECTORIES>)
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_link_libraries(${target} PRIVATE Boost::headers Threads::Threads
    $<TARGET_FILE:childproc::childproc> ${json_archive} ${container_archive})
  get_target_property(in_tree childproc::childproc ALIASED_TARGET)
  if(in_tree) # built by this project: the archive must exist before the link
    add_dependencies(${target} ${in_tree})
  endif()
  target_compile_options(${target} PRIVATE -ffunction-sections -fdata-sections)
  if(link STREQUAL "STATIC")
    target_link_options(${target} PRIVATE -static -Wl,--gc-sections)
  else()
    target_link_options(${target} PRIVATE -static-libstdc++ -static-libgcc -Wl,--gc-sections)
  endif()
endfunction()

function(childproc_add_worker target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "LINK" "")
  add_executable(${target} ${arg_UNPARSED_ARGUMENTS})
  childproc_worker_link_options(${target} LINK "${arg_LINK}")
endfunction()
