// The exit watcher, the SIGCHLD hub and the point of no return of spawn().
//
// The hub, signal dispositions and rlimits are process-wide and made once, so most of these run
// a scenario in a fresh helper process (tests/helpers/watcher_modes.hpp) and assert what it
// printed.
#include "common.hpp"

#include <cerrno>
#include <string>
#include <vector>

namespace {

using test::sanitized;

// The asan preset has UBSan too, whose vptr check needs a pipe of its own (to probe memory):
// with every fd taken it reports valid objects as having an invalid vptr.
constexpr bool ubsan_needs_fds =
#if defined(__SANITIZE_ADDRESS__)
    true;
#else
    false;
#endif

enum class watch { pidfd, sigchld };

// Runs the helper in `mode` with the exit watch forced, and returns what it printed (with its
// exit code, or the signal that ended it).
std::string run_scenario(const std::string& mode, watch w) {
  childproc::spawn_options options;
  options.env_overrides["CHILDPROC_EXIT_WATCH"] =
      w == watch::sigchld ? std::optional<std::string>("sigchld") : std::nullopt;
  auto r = childproc::spawn_sync(test::helper, {mode}, options);
  std::string out = r.out.value_or("");
  if (r.signal)
    out += "[signal " + std::to_string(*r.signal) + "]\n";
  else if (r.status != 0)
    out += "[exit " + std::to_string(r.status.value_or(-1)) + "]\n";
  return out;
}

} // namespace

// Before the fix: "ec=24 events=\nchildren=1\n" (the child was launched, then the eventfd
// failed: the error_code form returned EMFILE and left the child running, then a zombie).
TEST_CASE("nothing can fail after the point of no return", "[exit][watcher]") {
  if (ubsan_needs_fds) {
    WARN("skipped: the sanitizer runtime needs fds of its own, and this scenario leaves none");
    return;
  }
  // SIGCHLD mode, with only the hub's self-pipe fitting under RLIMIT_NOFILE: the eventfd fails
  // before the launch, and the failure is Node's EMFILE event, with no child.
  CHECK(run_scenario("watch-no-fd", watch::sigchld) ==
        "ec=0 events=error:24 close:-24\nchildren=0\n");
}

// Before the fix: out() threw std::logic_error ("stdio slot 1 is not a pipe").
TEST_CASE("after a failed launch, in(), out() and err() exist, already ended",
          "[exit][watcher][node]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "/nonexistent/program", {"a"});
  std::vector<std::string> events;
  std::optional<std::error_code> write_result;
  child.out().on_data([&](std::string_view) { events.push_back("out-data"); }).on_end([&] {
    events.push_back("out-end");
  });
  child.err().on_end([&] { events.push_back("err-end"); });
  child.in().write("x", [&](std::error_code ec) { write_result = ec; });
  child.on_error([&](const childproc::process_error& e) {
    events.push_back("error:" + std::to_string(e.code().value()));
  });
  child.on_close([&](auto, auto) { events.push_back("close"); });
  io.run();
  CHECK(events ==
        std::vector<std::string>{"error:" + std::to_string(ENOENT), "out-end", "err-end", "close"});
  REQUIRE(write_result);
  CHECK(*write_result == std::errc::broken_pipe);
  CHECK_FALSE(child.in().is_open());
  CHECK_FALSE(child.out().is_open());
}

// Before the fix: "ec=0 events=spawn close:0\nsigchld=handler own child reaped by the
// kernel=no\n" (the hub's handler replaced SIG_IGN: the application's child became a zombie).
TEST_CASE("the SIGCHLD fallback leaves an application's SIG_IGN in place", "[exit][sigchld]") {
  for (const watch w : {watch::pidfd, watch::sigchld}) {
    INFO("exit watch " << (w == watch::pidfd ? "pidfd" : "sigchld"));
    CHECK(run_scenario("sigchld-ignored", w) ==
          "ec=0 events=spawn close:-\nsigchld=ignore own child reaped by the kernel=yes\n");
  }
}

// Before the fix: "stopped seen=no\n" (the hub installed its handler with SA_NOCLDSTOP).
TEST_CASE("the SIGCHLD hub keeps the application's choice to hear of stopped children",
          "[exit][sigchld]") {
  for (const watch w : {watch::pidfd, watch::sigchld}) {
    INFO("exit watch " << (w == watch::pidfd ? "pidfd" : "sigchld"));
    CHECK(run_scenario("stop-reports", w) == "stopped seen=yes\n");
  }
}

// Before the fix: "sigchld=handler\n[signal 11]\n" (the failed start left its handler installed;
// the next start chained to it: the first SIGCHLD recursed until the stack overflowed).
TEST_CASE("a SIGCHLD hub that fails to start changes nothing and never chains to itself",
          "[exit][sigchld]") {
  if (sanitized) {
    WARN("skipped: the sanitizers reserve address space beyond any small RLIMIT_AS");
    return;
  }
  CHECK(run_scenario("hub-thread-fails-orphan", watch::pidfd) ==
        "sigchld=default\nsecond orphan reaped=yes\nsurvived\n");
}

// Before the fix: "ec=11 events=\nsigchld=handler children=1\n[signal 11]\n" (a bare generic:11
// after the child was launched, a zombie left, then a handler chaining to itself).
TEST_CASE("if the SIGCHLD hub's thread cannot start, spawn fails before any child exists and a "
          "later spawn works",
          "[exit][sigchld]") {
  if (sanitized) {
    WARN("skipped: the sanitizers reserve address space beyond any small RLIMIT_AS");
    return;
  }
  CHECK(run_scenario("hub-thread-fails", watch::sigchld) ==
        "ec=0 events=error:11 close:-11\nsigchld=default children=0\n"
        "ec=0 events=spawn close:5\nsurvived\n");
}

// Before the fix: "ec=0 events=spawn close:0\nno code unknown\n" (an EPERM from waitid was
// taken for "reaped by someone else").
TEST_CASE("only ECHILD from waitid means the child was reaped elsewhere", "[exit][watcher]") {
  CHECK(run_scenario("waitid-fails", watch::pidfd) == "ec=0 events=spawn close:0\ncode=3\n");
}

// Before the fix: "ec=0 events=spawn close:0\npidfds while running=0\n" (the variable was read
// again at the second spawn, which then used the SIGCHLD hub).
TEST_CASE("CHILDPROC_EXIT_WATCH is read once per process", "[exit][watcher]") {
  CHECK(run_scenario("exit-watch-read-once", watch::pidfd) ==
        "ec=0 events=spawn close:0\npidfds while running=1\n");
}
