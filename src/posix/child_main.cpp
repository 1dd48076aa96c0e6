// The child side of a launch: the only code that runs between clone and exec.
//
// Protocol
// --------
// The parent blocks every signal, creates a CLOEXEC error pipe and calls
// clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) with child_main on a stack of its own. The parent
// thread is suspended until the child execs or exits. The child then, in this order:
//   1. resets every signal disposition to SIG_DFL (the mask stays full until step 8, so no
//      handler of the parent can run here on shared memory);
//   2. setsid() / setpgid() / prctl(PR_SET_PDEATHSIG) when asked;
//   3. places the stdio sources in slots 0..n-1: first every source that is itself below n and
//      not already in place is moved above n with F_DUPFD_CLOEXEC, then each slot is dup3'ed
//      (or, when the source is already in its slot, has its CLOEXEC cleared). This order makes
//      any permutation safe, the stdout<->stderr swap included;
//   4. marks every fd >= n close-on-exec (close_range(CLOSE_RANGE_CLOEXEC), or a walk of
//      /proc/self/fd), so only the slots survive the exec, while the error pipe stays open;
//   5. chdir(cwd);
//   6. setgroups(0) (its failure is ignored: dropping groups needs privilege) / setgid / setuid
//      when asked;
//   7. clears the signal mask;
//   8. execve()s each PATH candidate with execvp's rules (ENOENT, ENOTDIR, ... go on to the
//      next; EACCES is remembered; ENOEXEC runs the file through /bin/sh).
// On any failure it writes a child_failure {errno, step} to the error pipe and _exits with 127.
// The parent reads the pipe: EOF means the exec happened (the pipe was closed by CLOEXEC).
//
// Rules for this file: the child shares the parent's memory and its thread's TLS, so it calls
// no libc wrapper that takes locks, allocates, touches errno-dependent state of other threads or
// broadcasts to threads (glibc's setuid does, to every thread of the *parent*). It uses raw
// syscalls only, and is not instrumented by the sanitizers (their interceptors would update the
// parent's shadow state from a process that is about to disappear).
#include "child_plan.hpp"

#include <childproc/error.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CHILDPROC_CHILD_CODE                                                                       \
  __attribute__((no_sanitize("address", "undefined", "thread"))) __attribute__((noinline))

namespace childproc::detail::posix {
namespace {

// Raw syscalls return -errno instead of touching errno, which is the parent thread's TLS.
CHILDPROC_CHILD_CODE long sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0,
                              long e = 0) noexcept {
#if defined(__x86_64__)
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                   : "rcx", "r11", "memory");
  return ret;
#else
  long ret = ::syscall(nr, a, b, c, d, e);
  return ret == -1 ? -errno : ret;
#endif
}

[[noreturn]] CHILDPROC_CHILD_CODE void fail(const child_plan& plan, long neg_errno,
                                            spawn_step step) noexcept {
  child_failure record{static_cast<std::int32_t>(-neg_errno), static_cast<std::int32_t>(step)};
  sys(SYS_write, plan.error_fd, reinterpret_cast<long>(&record), sizeof record);
  for (;;)
    sys(SYS_exit, 127);
}

// The kernel's struct sigaction (x86_64 layout), enough to install SIG_DFL.
struct kernel_sigaction {
  __sighandler_t handler;
  unsigned long flags;
  void* restorer;
  unsigned long mask;
};

CHILDPROC_CHILD_CODE void reset_signal_dispositions() noexcept {
  kernel_sigaction dfl{};
  dfl.handler = SIG_DFL;
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    sys(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, sizeof(unsigned long));
  }
}

CHILDPROC_CHILD_CODE void place_stdio(const child_plan& plan) noexcept {
  const int n = plan.slot_count; // at most max_stdio_slots: checked by the parent
  int src[max_stdio_slots];
  for (int i = 0; i < n; ++i)
    src[i] = plan.sources[i];
  // Move every source that a dup3 into a lower slot could overwrite out of the way first.
  for (int i = 0; i < n; ++i) {
    const int s = src[i];
    if (s >= 0 && s < n && s != i) {
      long r = sys(SYS_fcntl, s, F_DUPFD_CLOEXEC, n);
      if (r < 0)
        fail(plan, r, spawn_step::dup2);
      for (int j = i; j < n; ++j) // every later slot with the same source uses the copy
        if (src[j] == s && j != s)
          src[j] = static_cast<int>(r);
    }
  }
  for (int i = 0; i < n; ++i) {
    const int s = src[i];
    if (s < 0) {
      sys(SYS_close, i);
      continue;
    }
    long r = s == i ? sys(SYS_fcntl, i, F_SETFD, 0) : sys(SYS_dup3, s, i, 0);
    if (r < 0)
      fail(plan, r, spawn_step::dup2);
  }
}

CHILDPROC_CHILD_CODE void cloexec_above(const child_plan& plan) noexcept {
  const int first = plan.slot_count;
  if (plan.use_close_range && sys(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
    return;
  // Fallback: walk /proc/self/fd with getdents64 into a stack buffer.
  long dir = sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                 O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0)
    fail(plan, dir, spawn_step::close_fds);
  alignas(8) char buf[2048];
  for (;;) {
    long n = sys(SYS_getdents64, dir, reinterpret_cast<long>(buf), sizeof buf);
    if (n < 0)
      fail(plan, n, spawn_step::close_fds);
    if (n == 0)
      break;
    for (long off = 0; off < n;) {
      // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[]
      unsigned short reclen;
      __builtin_memcpy(&reclen, buf + off + 16, sizeof reclen);
      const char* name = buf + off + 19;
      int fd = 0;
      bool numeric = *name != '\0';
      for (const char* p = name; *p; ++p) {
        if (*p < '0' || *p > '9') {
          numeric = false;
          break;
        }
        fd = fd * 10 + (*p - '0');
      }
      if (numeric && fd >= first && fd != dir)
        sys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
      off += reclen;
    }
  }
  sys(SYS_close, dir);
}

CHILDPROC_CHILD_CODE bool try_next_candidate(long err) noexcept {
  // execvp's rule: these mean "not here", go on with the next PATH entry.
  return err == -ENOENT || err == -ENOTDIR || err == -ESTALE || err == -ENODEV ||
         err == -ETIMEDOUT || err == -EACCES;
}

} // namespace

CHILDPROC_CHILD_CODE int child_main(void* arg) noexcept {
  const child_plan& plan = *static_cast<const child_plan*>(arg);

  reset_signal_dispositions();

  if (plan.new_session) {
    if (long r = sys(SYS_setsid); r < 0)
      fail(plan, r, spawn_step::setsid);
  }
  if (plan.set_process_group) {
    if (long r = sys(SYS_setpgid, 0, plan.process_group); r < 0)
      fail(plan, r, spawn_step::setpgid);
  }
  if (plan.parent_death_kill) {
    if (long r = sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL); r < 0)
      fail(plan, r, spawn_step::pdeathsig);
    // The parent may have died before prctl: then nobody would ever send the signal.
    if (sys(SYS_getppid) != plan.parent_pid)
      for (;;)
        sys(SYS_exit, 127);
  }

  place_stdio(plan);
  cloexec_above(plan);

  if (plan.cwd) {
    if (long r = sys(SYS_chdir, reinterpret_cast<long>(plan.cwd)); r < 0)
      fail(plan, r, spawn_step::chdir);
  }
  if (plan.set_uid || plan.set_gid) {
    // Dropping supplementary groups needs privilege; without it, keep them (as libuv does).
    sys(SYS_setgroups, 0, 0);
  }
  if (plan.set_gid) {
    if (long r = sys(SYS_setgid, plan.gid); r < 0)
      fail(plan, r, spawn_step::setgid);
  }
  if (plan.set_uid) {
    if (long r = sys(SYS_setuid, plan.uid); r < 0)
      fail(plan, r, spawn_step::setuid);
  }

  unsigned long empty_mask = 0;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&empty_mask), 0, sizeof empty_mask);

  long last = -ENOENT;
  bool saw_eacces = false;
  for (int i = 0; i < plan.candidate_count; ++i) {
    const char* path = plan.candidates[i];
    long r = sys(SYS_execve, reinterpret_cast<long>(path), reinterpret_cast<long>(plan.argv),
                 reinterpret_cast<long>(plan.envp));
    if (r == -ENOEXEC) {
      plan.sh_argv[1] = const_cast<char*>(path);
      r = sys(SYS_execve, reinterpret_cast<long>(plan.sh_argv[0]),
              reinterpret_cast<long>(plan.sh_argv), reinterpret_cast<long>(plan.envp));
    }
    if (!try_next_candidate(r))
      fail(plan, r, spawn_step::execve);
    saw_eacces = saw_eacces || r == -EACCES;
    last = r;
  }
  fail(plan, saw_eacces ? -EACCES : last, spawn_step::execve);
}

} // namespace childproc::detail::posix
