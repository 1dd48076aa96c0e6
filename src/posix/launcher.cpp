// The parent side of a launch. See child_main.cpp for the protocol between the two sides.
//
// Why clone(CLONE_VM | CLONE_VFORK) and not fork(): the child shares the parent's memory until
// it execs, so the cost does not grow with the parent's size (no page tables are copied), which
// is what glibc's posix_spawn does too. A launch that changes uid/gid leaves out CLONE_VM: the
// kernel's commit_creds marks the *memory* non-dumpable, which under CLONE_VM is the parent's.
// Why not posix_spawn itself: glibc 2.36 cannot hand back a pidfd atomically (pidfd_spawn came in
// 2.39), cannot report which step failed, and has no setuid/setgid or parent-death signal; one
// path that does all of that keeps the launcher small.
#include "launcher.hpp"

#include "child_plan.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <string_view>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "the launcher is written for x86_64 (see CMakeLists.txt)"
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

// clone() without going through glibc's symbol: sanitizer runtimes intercept clone() and treat it
// as a fork (TSan runs its fork-child bookkeeping in the child), which corrupts their state when
// the child shares our memory. This is glibc's clone.S reduced to what we use: the child pops
// fn and arg from its new stack, calls fn, and exits with its result.
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

namespace childproc::detail::posix {
namespace {

// Per launching thread: the child's stack (64 KiB, a launch uses a few) and the page the child
// writes its report into, kept for the thread's life. The report page is MAP_SHARED so that a
// child without CLONE_VM (its own copy of our private memory) still reaches the parent; the stack
// is private, so that the copy such a child runs on is its own. Mapped at the first launch of
// the thread; a failed mmap is retried at the next one.
class launch_area {
public:
  static constexpr std::size_t stack_size = 64 * 1024;
  static constexpr std::size_t report_size = 4096;

  launch_area() noexcept = default;
  launch_area(const launch_area&) = delete;
  launch_area& operator=(const launch_area&) = delete;
  ~launch_area() { unmap(); }

  // The launching process's pid without a getpid() system call per launch: it is kept in a
  // MADV_WIPEONFORK page, which the kernel zeroes in a child of any kind of fork (_Fork() and
  // raw clones included, which run no atfork handler), so a forked child asks the kernel again.
  pid_t self() const noexcept {
    if (pid_page_ && *pid_page_ != 0)
      return *pid_page_;
    return ::getpid();
  }
  // True when mapped for the process `self`; false with errno set when an mmap failed.
  bool ready(pid_t self) noexcept {
    if (stack_ && owner_ == self)
      return true;
    unmap(); // a copy inherited through fork(): its report page is shared with the original
    void* stack = map(stack_size, MAP_PRIVATE | MAP_STACK);
    void* report = stack ? map(report_size, MAP_SHARED) : nullptr;
    if (!report) {
      const int saved = errno;
      if (stack)
        ::munmap(stack, stack_size);
      errno = saved;
      return false;
    }
    stack_ = static_cast<char*>(stack);
    report_ = static_cast<child_report*>(report);
    owner_ = self;
    map_pid_page(self);
    return true;
  }
  void* stack_top() const noexcept { return stack_ + stack_size; } // 16-byte aligned
  child_report* report() const noexcept { return report_; }

private:
  static void* map(std::size_t size, int flags) noexcept {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  // Optional: without the page (no MADV_WIPEONFORK before Linux 4.14), self() asks getpid().
  void map_pid_page(pid_t self) noexcept {
    void* page = map(pid_page_size, MAP_PRIVATE);
    if (page && ::madvise(page, pid_page_size, MADV_WIPEONFORK) != 0) {
      ::munmap(page, pid_page_size);
      page = nullptr;
    }
    pid_page_ = static_cast<pid_t*>(page);
    if (pid_page_)
      *pid_page_ = self;
  }
  void unmap() noexcept {
    if (pid_page_)
      ::munmap(pid_page_, pid_page_size);
    pid_page_ = nullptr;
    if (stack_)
      ::munmap(stack_, stack_size);
    if (report_)
      ::munmap(report_, report_size);
    stack_ = nullptr;
    report_ = nullptr;
  }

  char* stack_ = nullptr;
  child_report* report_ = nullptr;
  pid_t owner_ = 0;
  static constexpr std::size_t pid_page_size = 4096;
  pid_t* pid_page_ = nullptr; // the owner's pid; zeroed by the kernel in a forked child
};

std::vector<char*> c_strings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const auto& s : v)
    out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

void raw_sigprocmask(int how, const unsigned long* set, unsigned long* old) noexcept {
  ::syscall(SYS_rt_sigprocmask, how, set, old, sizeof(unsigned long));
}

// Blocks every signal in the calling thread for the scope, so that no handler of the parent runs
// in the child while it shares the parent's memory. Every one of the 64: glibc's pthread_sigmask
// silently keeps its internal SIGCANCEL and SIGSETXID (32, 33) deliverable, so this is the raw
// system call, as glibc's own posix_spawn does.
class all_signals_blocked {
public:
  all_signals_blocked() noexcept {
    const unsigned long all = ~0UL;
    raw_sigprocmask(SIG_SETMASK, &all, &saved_);
  }
  ~all_signals_blocked() { raw_sigprocmask(SIG_SETMASK, &saved_, nullptr); }
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;

private:
  unsigned long saved_ = 0;
};

// Returns the pid, or -errno (errno itself is never involved, so no destructor can change it
// before it is read).
long clone_child(int flags, void* stack_top, child_plan* plan, int* pidfd) noexcept {
  return childproc_raw_clone(static_cast<unsigned long>(flags), stack_top, pidfd, child_main, plan);
}

// One clone with every signal blocked; retried without CLONE_PIDFD on a kernel that lacks it.
long clone_with_plan(const launch_request& req, launch_area& area, child_plan& plan,
                     int& pidfd) noexcept {
  int flags = CLONE_VFORK | SIGCHLD;
  if (!plan.set_uid && !plan.set_gid)
    flags |= CLONE_VM;
  all_signals_blocked blocked;
  long r = clone_child(flags | (req.want_pidfd ? CLONE_PIDFD : 0), area.stack_top(), &plan, &pidfd);
  if (r == -EINVAL && req.want_pidfd)
    r = clone_child(flags, area.stack_top(), &plan, nullptr);
  return r;
}

// The methods the child uses for its fd sweep, from the test switch CHILDPROC_CLOSE_FDS (read
// once): "proc" starts with the /proc walk, "limit" with the walk up to RLIMIT_NOFILE.
fd_sweep first_sweep() noexcept {
  static const fd_sweep sweep = [] {
    const char* mode = std::getenv("CHILDPROC_CLOSE_FDS");
    if (mode && std::strcmp(mode, "proc") == 0)
      return fd_sweep::proc;
    if (mode && std::strcmp(mode, "limit") == 0)
      return fd_sweep::fd_limit;
    return fd_sweep::close_range;
  }();
  return sweep;
}

void reap_failed_child(pid_t pid) noexcept {
  int status;
  while (::waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
}

std::nullopt_t failed(std::error_code& ec, spawn_step& step, int error, spawn_step at) noexcept {
  ec.assign(error, std::system_category());
  step = at;
  return std::nullopt;
}

// What the child reads, allocated before the clone and kept until it returns.
struct child_arguments {
  std::vector<char*> argv, envp, sh_argv;
  std::vector<const char*> candidates;
  explicit child_arguments(const launch_request& req);
};

} // namespace

std::vector<std::string> exec_candidates(const std::string& file,
                                         const std::optional<std::string>& path_env) {
  if (file.find('/') != std::string::npos)
    return {file};
  std::string fallback;
  if (!path_env) {
    // execvp's default search path when PATH is unset.
    const std::size_t n = ::confstr(_CS_PATH, nullptr, 0);
    fallback.resize(n);
    if (n > 0) {
      ::confstr(_CS_PATH, fallback.data(), n);
      fallback.resize(n - 1);
    } else {
      fallback = "/bin:/usr/bin";
    }
  }
  const std::string_view path = path_env ? std::string_view(*path_env) : fallback;
  // One allocation per candidate (and one for the list): each is built where it stays.
  std::vector<std::string> out;
  out.reserve(static_cast<std::size_t>(std::count(path.begin(), path.end(), ':')) + 1);
  for (std::size_t begin = 0;;) {
    const std::size_t end = path.find(':', begin);
    const std::string_view dir =
        path.substr(begin, end == std::string_view::npos ? end : end - begin);
    std::string& candidate = out.emplace_back();
    // An empty entry means the current directory, as with execvp.
    if (!dir.empty()) {
      candidate.reserve(dir.size() + 1 + file.size());
      candidate += dir;
      if (dir.back() != '/')
        candidate += '/';
    }
    candidate += file;
    if (end == std::string_view::npos)
      break;
    begin = end + 1;
  }
  return out;
}

namespace {

child_arguments::child_arguments(const launch_request& req) : argv(c_strings(*req.argv)) {
  if (!req.inherited_env)
    envp = c_strings(req.envp);
  candidates.reserve(req.candidates.size());
  for (const auto& c : req.candidates)
    candidates.push_back(c.c_str());
  sh_argv.reserve(req.argv->size() + 2);
  sh_argv.push_back(const_cast<char*>("/bin/sh"));
  sh_argv.push_back(nullptr); // the candidate, filled in by the child
  for (std::size_t i = 1; i < req.argv->size(); ++i)
    sh_argv.push_back(const_cast<char*>((*req.argv)[i].c_str()));
  sh_argv.push_back(nullptr);
}

child_plan make_plan(const launch_request& req, child_arguments& args, pid_t self,
                     child_report* report) noexcept {
  child_plan plan;
  plan.sources = req.sources.data();
  plan.slot_count = static_cast<int>(req.sources.size());
  plan.new_session = req.new_session;
  plan.set_process_group = req.process_group.has_value();
  plan.process_group = req.process_group.value_or(0);
  plan.parent_death_kill = req.parent_death_kill;
  plan.parent_pid = self;
  plan.cwd = req.cwd.empty() ? nullptr : req.cwd.c_str();
  plan.set_gid = req.gid.has_value();
  plan.gid = req.gid.value_or(0);
  plan.set_uid = req.uid.has_value();
  plan.uid = req.uid.value_or(0);
  plan.candidates = args.candidates.data();
  plan.candidate_count = static_cast<int>(args.candidates.size());
  plan.argv = args.argv.data();
  plan.envp = req.inherited_env ? req.inherited_env->data() : args.envp.data();
  plan.sh_argv = args.sh_argv.data();
  plan.sweep = first_sweep();
  plan.report = report;
  return plan;
}

// The child's report once the clone returned (it has exec'd or exited: CLONE_VFORK). Volatile:
// the child wrote it behind the compiler's back.
child_report read_report(const child_report* report) noexcept {
  const volatile child_report* r = report;
  return {r->error, r->step};
}

// Puts the exec'd child's pidfd above stdio (CLONE_PIDFD takes the lowest free fd, which is 0..2
// when the application closed one), or opens one where the kernel had no CLONE_PIDFD. Returns 0
// or the errno that failed the launch.
int settle_pidfd(const launch_request& req, launch_result& result, int pidfd) noexcept {
  if (pidfd >= 0) {
    const int moved = above_stdio(pidfd);
    if (moved < 0)
      return errno;
    result.pidfd.reset(moved);
  } else if (req.want_pidfd) {
    // Optional: without one, the caller watches the exit another way.
    const long fd = ::syscall(SYS_pidfd_open, result.pid, 0);
    if (fd >= 0)
      result.pidfd.reset(above_stdio(static_cast<int>(fd)));
  }
  return 0;
}

} // namespace

std::optional<launch_result> launch(const launch_request& req, std::error_code& ec,
                                    spawn_step& step) noexcept {
  try {
    child_arguments args(req); // everything the child reads is allocated before the clone
    static thread_local launch_area area;
    const pid_t self = area.self();
    if (!area.ready(self))
      return failed(ec, step, errno, spawn_step::clone);
    child_plan plan = make_plan(req, args, self, area.report());
    *area.report() = child_report{};

    int pidfd = -1;
    launch_result result;
    const long r = clone_with_plan(req, area, plan, pidfd);
    if (r < 0)
      return failed(ec, step, static_cast<int>(-r), spawn_step::clone);
    result.pid = static_cast<pid_t>(r);
    if (const child_report report = read_report(area.report()); report.error != 0) {
      if (pidfd >= 0)
        ::close(pidfd);
      reap_failed_child(result.pid);
      return failed(ec, step, report.error, static_cast<spawn_step>(report.step));
    }
    if (const int error = settle_pidfd(req, result, pidfd); error != 0) {
      ::kill(result.pid, SIGKILL);
      reap_failed_child(result.pid);
      return failed(ec, step, error, spawn_step::clone);
    }
    ec.clear();
    step = spawn_step::none;
    return result;
  } catch (const std::bad_alloc&) {
    return failed(ec, step, ENOMEM, spawn_step::none);
  }
}

} // namespace childproc::detail::posix
