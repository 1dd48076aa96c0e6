// What the child does between clone and exec, fully prepared by the parent.
//
// Everything here is plain data pointing into memory the parent allocated before the launch:
// the child (which shares the parent's memory until it execs) only reads it, except for the
// one pointer slot sh_argv[1] it fills for the ENOEXEC fallback.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace childproc::detail::posix {

// The most stdio slots a launch may have (the child copies the table onto its stack).
inline constexpr int max_stdio_slots = 64;

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

  int error_fd = -1;           // write end of the CLOEXEC error pipe
  bool use_close_range = true; // false: walk /proc/self/fd instead (forced by tests)
};

// The record the child writes to error_fd when a step fails.
struct child_failure {
  std::int32_t error;
  std::int32_t step; // a childproc::spawn_step
};

// The clone() entry point of the child. Never returns: it execs or _exits with 127.
int child_main(void* plan) noexcept;

} // namespace childproc::detail::posix
