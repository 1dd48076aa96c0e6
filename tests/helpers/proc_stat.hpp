// What /proc/<pid>/stat says about a process: shared by the tests and the helper child.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <optional>
#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

namespace proc {

struct stat_line {
  char state = 0; // R, S, D, Z, X, ...
  pid_t ppid = 0;
};

// The state and parent of `pid`; empty when it does not exist (any more).
inline std::optional<stat_line> read_stat(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f)
    return std::nullopt;
  char buf[512] = {};
  const bool read = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  // The command name may contain anything, ')' included: the fields start after the last one.
  const char* paren = read ? std::strrchr(buf, ')') : nullptr;
  stat_line line;
  if (!paren || std::sscanf(paren + 2, "%c %d", &line.state, &line.ppid) != 2)
    return std::nullopt;
  return line;
}

// The children of `parent` (running or zombie), with their state.
inline std::vector<std::pair<pid_t, char>> children_of(pid_t parent) {
  std::vector<std::pair<pid_t, char>> found;
  DIR* d = ::opendir("/proc");
  if (!d)
    return found;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    const pid_t pid = std::atoi(e->d_name);
    if (auto line = read_stat(pid); line && line->ppid == parent)
      found.emplace_back(pid, line->state);
  }
  ::closedir(d);
  return found;
}

} // namespace proc
