// What the child does between clone and exec, fully prepared by the parent.
//
// Everything here is plain data pointing into memory the parent allocated before the launch:
// the child only reads it, except for the one pointer slot sh_argv[1] it fills for the ENOEXEC
// fallback, and the report it writes when a step fails.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace childproc::detail::posix {

// The most stdio slots a launch may have (the child copies the table onto its stack).
inline constexpr int max_stdio_slots = 64;

// How the child marks the fds above its slots close-on-exec. Each method falls back to the next
// when it fails; the parent may start further down (the test switch CHILDPROC_CLOSE_FDS).
enum class fd_sweep : std::uint8_t {
  close_range, // close_range(first, ~0, CLOSE_RANGE_CLOEXEC): Linux 5.11
  proc,        // a getdents64 walk of /proc/self/fd
  fd_limit,    // every fd below RLIMIT_NOFILE's soft limit (no /proc, an old kernel)
};

// What the child writes when a step fails, into memory the parent reads once the clone returned
// (CLONE_VFORK: the child has exec'd or exited by then). It lives in a MAP_SHARED page, so that it
// reaches the parent also from a child that does not share the parent's memory (no CLONE_VM).
struct child_report {
  std::int32_t error; // an errno; 0: no step failed
  std::int32_t step;  // a childproc::spawn_step
};

struct child_plan {
  // stdio: child fd i (0 <= i < slot_count) becomes a copy of sources[i]; -1 leaves it closed.
  const int* sources = nullptr;
  int slot_count = 0;

  bool new_session = false; // setsid()
  bool set_process_group = false;
  pid_t process_group = 0; // setpgid(0, process_group): 0 = a new group
  bool parent_death_kill = false;
  pid_t parent_pid = 0; // to detect a parent that died before prctl took effect

  const char* cwd = nullptr; // nullptr: stay in the parent's cwd

  bool set_gid = false;
  gid_t gid = 0;
  bool set_uid = false;
  uid_t uid = 0;

  // execvp's rules, precomputed: try each candidate path in order.
  const char* const* candidates = nullptr;
  int candidate_count = 0;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  // {"/bin/sh", <candidate>, argv[1..], nullptr}: for a candidate that fails with ENOEXEC.
  char** sh_argv = nullptr;

  fd_sweep sweep = fd_sweep::close_range; // the first method to try

  child_report* report = nullptr; // in shared memory, zeroed by the parent before the launch
};

// The clone() entry point of the child. Never returns: it execs or _exits with 127.
int child_main(void* plan) noexcept;

} // namespace childproc::detail::posix
