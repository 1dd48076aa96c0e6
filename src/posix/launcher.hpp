// The parent side of a launch: turn a request into a child_plan, clone, read the child's report.
#pragma once

#include "unique_fd.hpp"

#include <childproc/error.hpp>

#include <optional>
#include <string>
#include <sys/types.h>
#include <system_error>
#include <vector>

namespace childproc::detail::posix {

struct launch_request {
  std::vector<std::string> candidates; // paths to execve, in order (PATH lookup already done)
  const std::vector<std::string>* argv = nullptr; // argv[0] included; the caller's, not a copy
  std::vector<std::string> envp;                  // "NAME=value"
  // Used instead of envp when set: the parent's own "NAME=value" strings, nullptr-terminated
  // (the environment passed unchanged, as posix_spawn(environ) passes it, without copies).
  const std::vector<char*>* inherited_env = nullptr;
  std::vector<int> sources; // stdio: child fd i gets sources[i]; -1 leaves it closed
  std::string cwd;          // empty: the parent's
  bool new_session = false;
  std::optional<pid_t> process_group;
  bool parent_death_kill = false;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  bool want_pidfd = true; // false: the caller watches the exit without a pidfd
};

struct launch_result {
  pid_t pid = 0;
  unique_fd pidfd; // empty when not wanted or not available; never in 0..2
};

// Launches the child. On failure returns nullopt with `ec` set and `step` naming the failed step
// (in the parent or, through the report it writes, in the child); a child that failed was
// reaped (so is one whose pidfd cannot be moved above fd 2: EMFILE at step clone).
std::optional<launch_result> launch(const launch_request& request, std::error_code& ec,
                                    spawn_step& step) noexcept;

// execvp's candidate list for `file` over `path_env` (the child's PATH; nullopt: unset).
std::vector<std::string> exec_candidates(const std::string& file,
                                         const std::optional<std::string>& path_env);

} // namespace childproc::detail::posix
