// The parent side of a launch. See child_main.cpp for the protocol between the two sides.
//
// Why clone(CLONE_VM | CLONE_VFORK) and not fork(): the child shares the parent's memory until
// it execs, so the cost does not grow with the parent's size (no page tables are copied), which
// is what glibc's posix_spawn does too. Why not posix_spawn itself: glibc 2.36 cannot hand back a
// pidfd atomically (pidfd_spawn came in 2.39), cannot report which step failed, and has no
// setuid/setgid or parent-death signal; one path that does all of that keeps the launcher small.
#include "launcher.hpp"

#include "child_plan.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

// clone() without going through glibc's symbol: sanitizer runtimes intercept clone() and treat it
// as a fork (TSan runs its fork-child bookkeeping in the child), which corrupts their state when
// the child shares our memory. This is glibc's clone.S reduced to what we use: the child pops
// fn and arg from its new stack, calls fn, and exits with its result.
#if defined(__x86_64__)
extern "C" long childproc_raw_clone(unsigned long flags, void* stack_top, int* parent_tid,
                                    int (*fn)(void*) noexcept, void* arg);
__asm__(R"(
  .text
  .globl childproc_raw_clone
  .hidden childproc_raw_clone
  .type childproc_raw_clone, @function
childproc_raw_clone:
  .cfi_startproc
  and $-16, %rsi
  sub $16, %rsi
  mov %rcx, 0(%rsi)
  mov %r8, 8(%rsi)
  xor %r10d, %r10d
  xor %r8d, %r8d
  mov $56, %eax
  syscall
  test %rax, %rax
  jnz 1f
  .cfi_undefined %rip
  xor %ebp, %ebp
  pop %rax
  pop %rdi
  call *%rax
  mov %eax, %edi
  mov $60, %eax
  syscall
  hlt
1:
  ret
  .cfi_endproc
  .size childproc_raw_clone, .-childproc_raw_clone
)");
#endif

namespace childproc::detail::posix {
namespace {

// Returns the pid, or -1 with errno set.
pid_t clone_child(int flags, void* stack_top, child_plan* plan, int* pidfd) noexcept {
#if defined(__x86_64__)
  long r =
      childproc_raw_clone(static_cast<unsigned long>(flags), stack_top, pidfd, child_main, plan);
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return static_cast<pid_t>(r);
#else
  return ::clone(child_main, stack_top, flags, plan, pidfd);
#endif
}

// The child's stack: one per thread, kept for the thread's life (a launch uses a few KiB of it).
class clone_stack {
public:
  static constexpr std::size_t size = 64 * 1024;
  clone_stack() {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                     -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~clone_stack() {
    if (base_)
      ::munmap(base_, size);
  }
  clone_stack(const clone_stack&) = delete;
  clone_stack& operator=(const clone_stack&) = delete;
  // The top of the stack (it grows down), 16-byte aligned.
  void* top() const noexcept { return base_ ? base_ + size : nullptr; }

private:
  char* base_ = nullptr;
};

std::vector<char*> c_strings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const auto& s : v)
    out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Blocks every signal in the calling thread for the scope, so that no handler of the parent runs
// in the child while it shares the parent's memory.
class all_signals_blocked {
public:
  all_signals_blocked() noexcept {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~all_signals_blocked() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;

private:
  sigset_t saved_;
};

void reap_failed_child(pid_t pid) noexcept {
  int status;
  while (::waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
}

} // namespace

std::vector<std::string> exec_candidates(const std::string& file,
                                         const std::optional<std::string>& path_env) {
  if (file.find('/') != std::string::npos)
    return {file};
  std::string path;
  if (path_env) {
    path = *path_env;
  } else {
    // execvp's default search path when PATH is unset.
    std::size_t n = ::confstr(_CS_PATH, nullptr, 0);
    path.resize(n);
    if (n > 0) {
      ::confstr(_CS_PATH, path.data(), n);
      path.resize(n - 1);
    } else {
      path = "/bin:/usr/bin";
    }
  }
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (;;) {
    std::size_t end = path.find(':', begin);
    std::string dir = path.substr(begin, end == std::string::npos ? end : end - begin);
    // An empty entry means the current directory, as with execvp.
    out.push_back(dir.empty() ? file : dir + (dir.back() == '/' ? "" : "/") + file);
    if (end == std::string::npos)
      break;
    begin = end + 1;
  }
  return out;
}

std::optional<launch_result> launch(const launch_request& req, std::error_code& ec,
                                    spawn_step& step) noexcept {
  try {
    // Everything the child reads is allocated here, before the clone.
    std::vector<char*> argv = c_strings(req.argv);
    std::vector<char*> envp = c_strings(req.envp);
    std::vector<const char*> candidates;
    candidates.reserve(req.candidates.size());
    for (const auto& c : req.candidates)
      candidates.push_back(c.c_str());
    std::vector<char*> sh_argv;
    sh_argv.reserve(req.argv.size() + 2);
    sh_argv.push_back(const_cast<char*>("/bin/sh"));
    sh_argv.push_back(nullptr); // the candidate, filled in by the child
    for (std::size_t i = 1; i < req.argv.size(); ++i)
      sh_argv.push_back(const_cast<char*>(req.argv[i].c_str()));
    sh_argv.push_back(nullptr);

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) < 0) {
      ec.assign(errno, std::system_category());
      step = spawn_step::pipe;
      return std::nullopt;
    }
    unique_fd err_read(pipe_fds[0]), err_write(pipe_fds[1]);

    child_plan plan;
    plan.sources = req.sources.data();
    plan.slot_count = static_cast<int>(req.sources.size());
    plan.new_session = req.new_session;
    plan.set_process_group = req.process_group.has_value();
    plan.process_group = req.process_group.value_or(0);
    plan.parent_death_kill = req.parent_death_kill;
    plan.parent_pid = ::getpid();
    plan.cwd = req.cwd.empty() ? nullptr : req.cwd.c_str();
    plan.set_gid = req.gid.has_value();
    plan.gid = req.gid.value_or(0);
    plan.set_uid = req.uid.has_value();
    plan.uid = req.uid.value_or(0);
    plan.candidates = candidates.data();
    plan.candidate_count = static_cast<int>(candidates.size());
    plan.argv = argv.data();
    plan.envp = envp.data();
    plan.sh_argv = sh_argv.data();
    plan.error_fd = err_write.get();
    plan.use_close_range = req.use_close_range;

    static thread_local clone_stack stack;
    if (!stack.top()) {
      ec.assign(ENOMEM, std::system_category());
      step = spawn_step::clone;
      return std::nullopt;
    }

    int pidfd = -1;
    pid_t pid;
    {
      all_signals_blocked blocked;
      int flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
      pid = clone_child(flags | (req.want_pidfd ? CLONE_PIDFD : 0), stack.top(), &plan, &pidfd);
      if (pid < 0 && errno == EINVAL && req.want_pidfd) // a kernel without CLONE_PIDFD
        pid = clone_child(flags, stack.top(), &plan, nullptr);
    }
    if (pid < 0) {
      ec.assign(errno, std::system_category());
      step = spawn_step::clone;
      return std::nullopt;
    }
    launch_result result;
    result.pid = pid;
    result.pidfd.reset(pidfd);

    // The child has exec'd or exited (CLONE_VFORK): the read does not block.
    err_write.reset();
    child_failure failure{};
    ssize_t n;
    do {
      n = ::read(err_read.get(), &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    if (n == sizeof failure) {
      reap_failed_child(pid);
      ec.assign(failure.error, std::system_category());
      step = static_cast<spawn_step>(failure.step);
      return std::nullopt;
    }
    if (req.want_pidfd && !result.pidfd) {
      long fd = ::syscall(SYS_pidfd_open, pid, 0);
      if (fd >= 0)
        result.pidfd.reset(static_cast<int>(fd));
    }
    ec.clear();
    step = spawn_step::none;
    return result;
  } catch (const std::bad_alloc&) {
    ec.assign(ENOMEM, std::system_category());
    step = spawn_step::none;
    return std::nullopt;
  }
}

} // namespace childproc::detail::posix
