// The child side of a launch: the only code that runs between clone and exec.
//
// Protocol
// --------
// The parent blocks every signal (glibc's internal ones included), zeroes the child_report in
// its per-thread shared page and calls clone(CLONE_VFORK | CLONE_PIDFD), with CLONE_VM unless
// the launch changes uid/gid, with child_main on a stack of its own. The parent thread is
// suspended until the child execs or exits. The child then, in this order:
//   1. resets every signal disposition to SIG_DFL (the mask stays full until step 8, so no
//      handler of the parent can run here on shared memory);
//   2. setsid() / setpgid() when asked;
//   3. places the stdio sources in slots 0..n-1: first every source that is itself below n and
//      not already in place is moved above n with F_DUPFD_CLOEXEC, then each slot is dup3'ed
//      (or, when the source is already in its slot, has its CLOEXEC cleared). This order makes
//      any permutation safe, the stdout<->stderr swap included;
//   4. marks every fd >= n close-on-exec: close_range(CLOSE_RANGE_CLOEXEC), else a walk of
//      /proc/self/fd, else every fd below RLIMIT_NOFILE (asked by the child, only then);
//   5. chdir(cwd);
//   6. setgroups(0) (its failure is ignored: dropping groups needs privilege) / setgid / setuid
//      when asked;
//   7. prctl(PR_SET_PDEATHSIG) when asked: after step 6, because a credential change clears it;
//      then exits if the parent died before the prctl took effect;
//   8. clears the signal mask;
//   9. execve()s each PATH candidate with execvp's rules (ENOENT, ENOTDIR, ... go on to the
//      next; EACCES is remembered; ENOEXEC runs the file through /bin/sh).
// On any failure it writes {errno, step} into the report and _exits with 127. When the clone
// returns, the parent reads the report: error 0 means the exec happened. There is no pipe, so
// nothing can collide with a slot, and no fd that another thread's fork() could hold open.
//
// Rules for this file: the child shares the parent's memory and its thread's TLS, so it calls
// no libc at all (libc takes locks, sets errno in the parent thread's TLS, and glibc's setuid
// broadcasts to every thread of the *parent*). It uses raw syscalls only. CMakeLists.txt builds
// it without builtins, stack protector, sanitizers or coverage, and the test
// child_island_references_no_symbol fails if the object references any symbol.
#include "child_plan.hpp"

#include <childproc/error.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#if !defined(__x86_64__)
#error "the child island is written for x86_64 (see CMakeLists.txt)"
#endif

namespace childproc::detail::posix {
namespace {

// Raw syscalls return -errno instead of touching errno, which is the parent thread's TLS.
long sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0) noexcept {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                   : "rcx", "r11", "memory");
  return ret;
}

[[noreturn]] void exit_127() noexcept {
  for (;;)
    sys(SYS_exit, 127);
}

[[noreturn]] void fail(const child_plan& plan, long neg_errno, spawn_step step) noexcept {
  volatile child_report* report = plan.report;
  report->step = static_cast<std::int32_t>(step);
  report->error = static_cast<std::int32_t>(-neg_errno);
  exit_127();
}

// The kernel's struct sigaction (x86_64 layout), enough to install SIG_DFL.
struct kernel_sigaction {
  __sighandler_t handler;
  unsigned long flags;
  void* restorer;
  unsigned long mask;
};

void reset_signal_dispositions() noexcept {
  kernel_sigaction dfl; // field by field: `dfl{}` is a memset call at clang -O0
  dfl.handler = SIG_DFL;
  dfl.flags = 0;
  dfl.restorer = nullptr;
  dfl.mask = 0;
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    sys(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, sizeof(unsigned long));
  }
}

void join_session_or_group(const child_plan& plan) noexcept {
  if (plan.new_session) {
    if (long r = sys(SYS_setsid); r < 0)
      fail(plan, r, spawn_step::setsid);
  }
  if (plan.set_process_group) {
    if (long r = sys(SYS_setpgid, 0, plan.process_group); r < 0)
      fail(plan, r, spawn_step::setpgid);
  }
}

void place_stdio(const child_plan& plan) noexcept {
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

// The fd named by a /proc/self/fd entry, or -1 for "." and "..".
int parse_fd(const char* name) noexcept {
  if (*name == '\0')
    return -1;
  int fd = 0;
  for (const char* p = name; *p; ++p) {
    if (*p < '0' || *p > '9')
      return -1;
    fd = fd * 10 + (*p - '0');
  }
  return fd;
}

// Marks every fd >= first listed in /proc/self/fd; false when /proc cannot be read.
bool cloexec_by_proc(int first) noexcept {
  long dir = sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                 O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0)
    return false;
  alignas(8) char buf[2048];
  long n;
  while ((n = sys(SYS_getdents64, dir, reinterpret_cast<long>(buf), sizeof buf)) > 0) {
    for (long off = 0; off < n;) {
      // struct linux_dirent64: u64 ino, s64 off, u16 reclen (little endian), u8 type, name[]
      const auto* entry = reinterpret_cast<const unsigned char*>(buf + off);
      const int fd = parse_fd(buf + off + 19);
      if (fd >= first && fd != dir)
        sys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
      off += entry[16] | entry[17] << 8;
    }
  }
  sys(SYS_close, dir);
  return n == 0;
}

// The soft RLIMIT_NOFILE, asked only when the cheaper sweeps failed: no fd is at or above it.
int open_fd_limit() noexcept {
  struct {
    unsigned long long soft, hard;
  } limit; // filled by the kernel (no `{}`: clang -O0 would zero it with a call to memset)
  constexpr int unlimited = 1 << 20; // fs.nr_open's default: RLIM_INFINITY means at most this
  if (sys(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, reinterpret_cast<long>(&limit)) < 0 ||
      limit.soft == RLIM_INFINITY)
    return unlimited;
  constexpr unsigned long long int_max = 0x7fffffff;
  return static_cast<int>(limit.soft < int_max ? limit.soft : int_max);
}

void cloexec_above(const child_plan& plan) noexcept {
  const int first = plan.slot_count;
  if (plan.sweep == fd_sweep::close_range &&
      sys(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
    return;
  if (plan.sweep != fd_sweep::fd_limit && cloexec_by_proc(first))
    return;
  // The last resort: every fd the process may have (fcntl on a free fd fails harmlessly).
  const int limit = open_fd_limit();
  for (int fd = first; fd < limit; ++fd)
    sys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
}

void change_directory(const child_plan& plan) noexcept {
  if (plan.cwd) {
    if (long r = sys(SYS_chdir, reinterpret_cast<long>(plan.cwd)); r < 0)
      fail(plan, r, spawn_step::chdir);
  }
}

void change_credentials(const child_plan& plan) noexcept {
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
}

// After change_credentials: the kernel clears the parent-death signal on a credential change.
void arm_parent_death_signal(const child_plan& plan) noexcept {
  if (!plan.parent_death_kill)
    return;
  if (long r = sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL); r < 0)
    fail(plan, r, spawn_step::pdeathsig);
  // The parent may have died before prctl: then nobody would ever send the signal.
  if (sys(SYS_getppid) != plan.parent_pid)
    exit_127();
}

bool try_next_candidate(long err) noexcept {
  // execvp's rule: these mean "not here", go on with the next PATH entry.
  return err == -ENOENT || err == -ENOTDIR || err == -ESTALE || err == -ENODEV ||
         err == -ETIMEDOUT || err == -EACCES;
}

[[noreturn]] void exec_candidates(const child_plan& plan) noexcept {
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

} // namespace

int child_main(void* arg) noexcept {
  const child_plan& plan = *static_cast<const child_plan*>(arg);
  reset_signal_dispositions();
  join_session_or_group(plan);
  place_stdio(plan);
  cloexec_above(plan);
  change_directory(plan);
  change_credentials(plan);
  arm_parent_death_signal(plan);
  unsigned long empty_mask = 0;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&empty_mask), 0, sizeof empty_mask);
  exec_candidates(plan);
}

} // namespace childproc::detail::posix
