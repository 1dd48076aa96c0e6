// A process's resident set, for the memory limits of the pool and the cluster (internal).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>
#include <string>

namespace childproc::detail::posix {

// The resident set of `pid` in bytes, from /proc/<pid>/statm; 0 when it cannot be read (the
// process is gone): a limit is then not exceeded.
inline std::size_t resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::size_t size = 0, resident = 0;
  if (!(statm >> size >> resident))
    return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

} // namespace childproc::detail::posix
