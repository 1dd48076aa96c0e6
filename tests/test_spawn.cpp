// spawn(): events, their order, and the launch errors Node reports as events or throws.
#include "common.hpp"

#include <boost/asio/steady_timer.hpp>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <malloc.h>
#include <spawn.h>
#include <sstream>
#include <sys/stat.h>
#include <thread>

using namespace std::chrono_literals;
using Catch::Matchers::Contains;

TEST_CASE("spawn streams the child's stdout and ends with exit 0", "[spawn]") {
  auto o = test::run_helper({"echo", "hello world"});
  CHECK(o.out == "hello world");
  CHECK(o.err.empty());
  CHECK(o.exit_code == 0);
  CHECK_FALSE(o.exit_signal);
  CHECK(o.close_code == 0);
  CHECK_FALSE(o.error);
}

TEST_CASE("events come in Node's order: spawn, data, exit, close", "[spawn]") {
  auto o = test::run_helper({"echo", "x"});
  REQUIRE(o.events.size() == 4);
  CHECK(o.events[0] == "spawn");
  // Data may arrive before or after exit, but always after spawn and before close.
  CHECK(((o.events[1] == "out" && o.events[2] == "exit") ||
         (o.events[1] == "exit" && o.events[2] == "out")));
  CHECK(o.events[3] == "close");
}

TEST_CASE("output written before the child exits is delivered before exit", "[spawn]") {
  // Found under TSan: the ls example printed "done" (exit) before the listing. A slow parent can
  // see the exit before the pipe's readiness; the state machine now reads what the dead child
  // left in its pipes before emitting `exit`. This checks the property on children that have
  // finished before the executor runs at all.
  for (int i = 0; i < 20; ++i) {
    asio::io_context io;
    auto child = childproc::spawn(io, test::helper, {"out", "60000"}); // fits the pipe
    std::size_t before_exit = 0, total = 0;
    bool exited = false;
    child.out().on_data([&](std::string_view d) {
      total += d.size();
      if (!exited)
        before_exit += d.size();
    });
    child.on_exit([&](auto, auto) { exited = true; });
    while (test::alive(*child.pid()))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io.run();
    CHECK(before_exit == 60000);
    CHECK(total == 60000);
  }
}

TEST_CASE("a missing program gives error then close with -ENOENT, and no spawn or exit",
          "[spawn][errors]") {
  asio::io_context io;
  test::outcome o;
  auto child = childproc::spawn(io, "childproc-no-such-program", {"a", "b"});
  test::record(child, o);
  CHECK_FALSE(child.pid());
  io.run();
  REQUIRE(o.events == std::vector<std::string>{"error", "close"});
  REQUIRE(o.error);
  CHECK(o.error->code() == std::errc::no_such_file_or_directory);
  CHECK(o.error->syscall() == "spawn childproc-no-such-program");
  CHECK(o.error->path() == "childproc-no-such-program");
  CHECK(o.error->spawn_args() == std::vector<std::string>{"a", "b"});
  CHECK(o.error->step() == childproc::spawn_step::execve);
  CHECK_THAT(std::string(o.error->what()), Contains("spawn childproc-no-such-program ENOENT"));
  CHECK(o.close_code == -ENOENT);
  CHECK(child.exit_code() == -ENOENT);
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a file without execute permission gives EACCES as an event, and no zombie",
          "[spawn][errors]") {
  auto path = std::filesystem::temp_directory_path() / "childproc-not-executable.sh";
  std::ofstream(path) << "#!/bin/sh\necho hi\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_read |
                                         std::filesystem::perms::owner_write);
  auto o = test::run(path.string(), {});
  std::filesystem::remove(path);
  REQUIRE(o.events == std::vector<std::string>{"error", "close"});
  CHECK(o.error->code() == std::errc::permission_denied);
  CHECK(o.close_code == -EACCES);
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("async_wait reports the launch error of a missing program", "[spawn][errors]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "childproc-no-such-program");
  boost::system::error_code got;
  child.async_wait([&](boost::system::error_code ec, childproc::exit_status) { got = ec; });
  io.run();
  CHECK(got == boost::system::errc::no_such_file_or_directory);
}

TEST_CASE("a missing cwd fails the spawn call itself and names the chdir step", "[spawn][errors]") {
  asio::io_context io;
  try {
    childproc::spawn(io, test::helper, {"cwd"}, {.cwd = "/no/such/dir"});
    FAIL("spawn did not throw");
  } catch (const childproc::process_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(e.step() == childproc::spawn_step::chdir);
    CHECK_THAT(std::string(e.what()), Contains("(chdir)"));
  }
  std::error_code ec;
  auto child = childproc::spawn(io, test::helper, {"cwd"}, {.cwd = "/no/such/dir"}, ec);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK_FALSE(child);
  CHECK(io.poll() == 0);
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a cwd that is a file fails with ENOTDIR", "[spawn][errors]") {
  asio::io_context io;
  std::error_code ec;
  auto child = childproc::spawn(io, test::helper, {"cwd"}, {.cwd = "/etc/passwd"}, ec);
  CHECK(ec == std::errc::not_a_directory);
  CHECK_FALSE(child);
}

TEST_CASE("cwd changes the child's working directory", "[spawn]") {
  auto o = test::run_helper({"cwd"}, {.cwd = "/usr"});
  CHECK(o.out == "/usr\n");
}

TEST_CASE("NUL bytes in any argument are rejected before anything is launched", "[spawn][errors]") {
  asio::io_context io;
  const std::string with_nul("a\0b", 3);
  std::error_code ec;
  childproc::spawn(io, test::helper, {"args", with_nul}, {}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  CHECK(ec == std::errc::invalid_argument);
  childproc::spawn(io, with_nul, {}, {}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  childproc::spawn(io, test::helper, {}, {.env_overrides = {{"X", with_nul}}}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  childproc::spawn(io, test::helper, {}, {.cwd = with_nul}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  CHECK_THROWS_AS(childproc::spawn(io, "", {}), childproc::process_error);
  CHECK(io.poll() == 0); // nothing was launched, so nothing was posted
}

TEST_CASE("invalid options are rejected: bad kill_signal, detached with process_group, bad fd",
          "[spawn][errors]") {
  asio::io_context io;
  std::error_code ec;
  childproc::spawn(io, test::helper, {"exit", "0"}, {.kill_signal = 0}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  childproc::spawn(io, test::helper, {"exit", "0"}, {.detached = true, .process_group = 0}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
  childproc::spawn(io, test::helper, {"exit", "0"},
                   {.stdio = {childproc::stdio::pipe, childproc::stdio::fd(987)}}, ec);
  CHECK(ec == std::errc::bad_file_descriptor);
}

TEST_CASE("a child killed by SIGTERM has a signal and no code, while exit 143 is a code",
          "[spawn][exit]") {
  auto killed = test::run_helper({"raise", std::to_string(SIGTERM)});
  CHECK_FALSE(killed.exit_code);
  CHECK(killed.exit_signal == SIGTERM);
  CHECK(killed.close_signal == SIGTERM);

  auto exited = test::run("/bin/sh", {"-c", "exit 143"});
  CHECK(exited.exit_code == 143);
  CHECK_FALSE(exited.exit_signal);

  auto sigkill = test::run_helper({"raise", std::to_string(SIGKILL)});
  auto exit9 = test::run_helper({"exit", "9"});
  CHECK(sigkill.exit_signal == SIGKILL);
  CHECK_FALSE(sigkill.exit_code);
  CHECK(exit9.exit_code == 9);
  CHECK_FALSE(exit9.exit_signal);
}

TEST_CASE("spawn_file and spawn_args are Node's spawnfile and spawnargs", "[spawn]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "echo", {"a", "b"}, {.stdio = {childproc::stdio::ignore}});
  CHECK(child.spawn_file() == "echo");
  CHECK(child.spawn_args() == std::vector<std::string>{"echo", "a", "b"});
  auto shell = childproc::spawn(io, "echo", {"a", "b"},
                                {.stdio = {childproc::stdio::ignore}, .shell = true});
  CHECK(shell.spawn_file() == "/bin/sh");
  CHECK(shell.spawn_args() == std::vector<std::string>{"/bin/sh", "-c", "echo a b"});
  io.run();
}

TEST_CASE("shell: true joins file and args with spaces, unquoted, for /bin/sh -c", "[spawn]") {
  auto o = test::run("echo", {"$((1+2))", "|", "tr", "3", "x"}, {.shell = true});
  CHECK(o.out == "x\n");
  auto named = test::run("echo $0", {}, {.shell = std::string("/bin/bash")});
  CHECK(named.out == "/bin/bash\n");
}

TEST_CASE("an empty-string argument survives an argv launch", "[spawn]") {
  auto o = test::run_helper({"args", "", "a b", "", "'q'"});
  CHECK(o.out == "[]\n[a b]\n[]\n['q']\n");
}

TEST_CASE("argv0 changes what the child sees as argv[0], not what runs", "[spawn]") {
  auto o = test::run_helper({"argv0"}, {.argv0 = "custom-name"});
  CHECK(o.out == "custom-name\n");
}

TEST_CASE("env replaces the environment and leaves out undefined values", "[spawn][env]") {
  childproc::env_map env{{"ONLY", "this"}, {"GONE", std::nullopt}};
  CHECK(test::run_helper({"env", "ONLY"}, {.env = env}).out == "this\n");
  CHECK(test::run_helper({"env", "GONE"}, {.env = env}).out == "<unset>\n");
  CHECK(test::run_helper({"env", "HOME"}, {.env = env}).out == "<unset>\n");
}

TEST_CASE("env_overrides set and remove variables on top of the inherited environment",
          "[spawn][env]") {
  ::setenv("CHILDPROC_TEST_INHERITED", "yes", 1);
  ::setenv("CHILDPROC_TEST_REMOVED", "yes", 1);
  childproc::spawn_options o{
      .env_overrides = {{"CHILDPROC_TEST_ADDED", "1"}, {"CHILDPROC_TEST_REMOVED", std::nullopt}}};
  CHECK(test::run_helper({"env", "CHILDPROC_TEST_INHERITED"}, o).out == "yes\n");
  CHECK(test::run_helper({"env", "CHILDPROC_TEST_ADDED"}, o).out == "1\n");
  CHECK(test::run_helper({"env", "CHILDPROC_TEST_REMOVED"}, o).out == "<unset>\n");
}

TEST_CASE("PATH lookup uses the PATH of the child's environment", "[spawn][env]") {
  auto dir = std::filesystem::temp_directory_path() / "childproc-path-test";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(test::helper, dir / "childproc-helper-copy",
                             std::filesystem::copy_options::overwrite_existing);
  // Not on the parent's PATH: found only through the child's.
  auto found = test::run("childproc-helper-copy", {"echo", "found"},
                         {.env_overrides = {{"PATH", "/nonexistent:" + dir.string()}}});
  CHECK(found.out == "found");
  auto missing = test::run("childproc-helper-copy", {"echo", "found"});
  CHECK(missing.error);
  // With PATH unset, execvp's default path (/bin:/usr/bin) applies.
  auto default_path = test::run("sh", {"-c", "echo ok"}, {.env = childproc::env_map{}});
  CHECK(default_path.out == "ok\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("a script without a #! line runs through /bin/sh, as with execvp", "[spawn]") {
  auto path = std::filesystem::temp_directory_path() / "childproc-no-shebang";
  std::ofstream(path) << "echo \"from sh: $1\"\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  auto o = test::run(path.string(), {"arg1"});
  std::filesystem::remove(path);
  CHECK(o.out == "from sh: arg1\n");
  CHECK(o.exit_code == 0);
}

TEST_CASE("detached starts a new session and process_group 0 a new group", "[spawn]") {
  const auto fields = [](const std::string& s) {
    pid_t pid = 0, pgid = 0, sid = 0;
    std::sscanf(s.c_str(), "%d %d %d", &pid, &pgid, &sid);
    return std::array<pid_t, 3>{pid, pgid, sid};
  };
  auto d = fields(test::run_helper({"sid"}, {.detached = true}).out);
  CHECK(d[0] == d[1]);
  CHECK(d[0] == d[2]);
  auto g = fields(test::run_helper({"sid"}, {.process_group = 0}).out);
  CHECK(g[0] == g[1]);
  CHECK(g[2] == ::getsid(0));
  auto plain = fields(test::run_helper({"sid"}).out);
  CHECK(plain[1] == ::getpgid(0));
}

TEST_CASE("uid and gid run the child as another user", "[spawn][ids]") {
  if (::geteuid() != 0) {
    WARN("not root: uid/gid change cannot be tested");
    return;
  }
  auto o = test::run_helper({"ids"}, {.uid = 65534, .gid = 65534});
  CHECK(o.out == "65534 65534\n");
}

TEST_CASE("a refused setuid fails the spawn call with EPERM and the setuid step",
          "[spawn][ids][errors]") {
  if (::geteuid() != 0) {
    WARN("not root: the helper cannot drop privileges first");
    return;
  }
  // The helper drops to uid 65534, then asks to spawn as root.
  auto o = test::run_helper({"drop-and-spawn"});
  CHECK(o.out == "setuid " + std::to_string(EPERM) + "\n");
}

namespace {

// Runs the helper with exactly `envp`: execve takes entries that no env_map can hold ("=x").
std::string run_helper_with_envp(std::vector<std::string> args, std::vector<const char*> envp) {
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<char*> argv{const_cast<char*>(test::helper.c_str())};
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, test::helper.c_str(), &actions, nullptr, argv.data(),
                                    const_cast<char* const*>(envp.data()));
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; spawned == 0 && (n = ::read(out[0], buf, sizeof buf)) != 0;)
    if (n > 0)
      text.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  if (spawned == 0)
    ::waitpid(pid, &status, 0);
  return text;
}

} // namespace

// Before the fix: the child was killed at once (signal 15) and no error was reported, for
// milliseconds::max() and 400 years alike (UBSan: signed overflow converting to nanoseconds).
TEST_CASE("a timeout or kill_after too long for a timer is rejected, never fires at once",
          "[spawn][timeout]") {
  const std::chrono::milliseconds too_long[] = {
      std::chrono::milliseconds::max(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::years(400))};
  for (const auto d : too_long) {
    for (const bool as_timeout : {true, false}) {
      childproc::spawn_sync_options o;
      (as_timeout ? o.timeout : o.kill_after) = d;
      if (!as_timeout)
        o.timeout = 50ms; // so that a library kill would start the escalation
      std::error_code ec;
      auto r = childproc::spawn_sync(test::helper, {"sleep", "200"}, o, ec);
      CHECK(ec == childproc::errc::invalid_argument);
      CHECK_FALSE(r.signal);
      CHECK_FALSE(r.pid);
      asio::io_context io;
      CHECK_THROWS_AS(childproc::spawn(io, test::helper, {"sleep", "200"}, o),
                      childproc::process_error);
    }
  }
  // The longest ones a timer can count never fire early.
  const auto longest =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::years(290));
  auto r = childproc::spawn_sync(test::helper, {"sleep", "200"},
                                 {.timeout = longest, .kill_after = longest});
  CHECK(r.status == 0);
  CHECK_FALSE(r.signal);
  CHECK_FALSE(r.error);
}

// Before the fix: the helper printed
// "error: spawn .../childproc_test_helper invalid argument" (every inheriting spawn threw).
TEST_CASE("an inherited environ entry without a name is skipped, not an error", "[spawn][env]") {
  CHECK(run_helper_with_envp({"env-nameless"}, {"=x", "A=1"}) == "1\n"); // execve keeps it
  CHECK(run_helper_with_envp({"spawn-inherit"}, {"=x", "A=1"}) == "0\n");
}

// Before the fix: the helper printed "pipe EMFILE".
TEST_CASE("a failed open of /dev/null names its own launch step", "[spawn][errors]") {
#if defined(__SANITIZE_ADDRESS__)
  // The asan preset has UBSan too, whose vptr check needs a pipe of its own (to probe memory):
  // with every fd taken it reports valid objects as having an invalid vptr (seen in CI).
  WARN("skipped: the sanitizer runtime needs fds of its own, and this scenario leaves none");
  return;
#endif
  auto r = childproc::spawn_sync(test::helper, {"devnull-emfile"});
  CHECK(r.out == "open_dev_null EMFILE\n");
  CHECK(childproc::to_string(childproc::spawn_step::open_dev_null) == "open_dev_null");
}

// Before the fix: "spawn fd(1): child pipe:[...] parent pipe:[33985]": the parent's end of the
// stdout pipe was made in fd 0 and kept there while the child ran.
TEST_CASE("with fd 0 closed, an inherit of it is /dev/null and the library's fds stay above 2",
          "[spawn][stdio]") {
  auto r = childproc::spawn_sync(test::helper, {"stdin-closed"});
  std::istringstream lines(r.out.value_or(""));
  std::string sync_line, fd_line, inherit_line;
  std::getline(lines, sync_line);
  std::getline(lines, fd_line);
  std::getline(lines, inherit_line);
  CHECK(sync_line == "spawn_sync inherit: child /dev/null");
  CHECK_THAT(fd_line, Catch::Matchers::StartsWith("spawn fd(1): child pipe:"));
  CHECK_THAT(inherit_line, Catch::Matchers::StartsWith("spawn inherit: child /dev/null parent "));
  // After spawn() returned, fd 0 is none of the pipes or /dev/null that spawn() made.
  for (const auto& line : {fd_line, inherit_line}) {
    const std::string parent = line.substr(line.find(" parent ") + 8);
    CHECK_THAT(parent, !Contains("pipe:") && !Contains("/dev/null"));
  }
  CHECK(r.status == 0);
}

// Guards the per-thread snapshot of environ that spares a copy of the environment per spawn
// (docs/bench/spawn-cost.md); it passes before that change too, which had no snapshot.
TEST_CASE("each spawn sees the environment as setenv and unsetenv left it", "[spawn][env]") {
  const auto seen = [] { return test::run(test::helper, {"env", "CHILDPROC_TEST_CHANGING"}).out; };
  ::setenv("CHILDPROC_TEST_CHANGING", "one", 1);
  CHECK(seen() == "one\n");
  ::setenv("CHILDPROC_TEST_CHANGING", "two", 1);
  CHECK(seen() == "two\n");
  ::unsetenv("CHILDPROC_TEST_CHANGING");
  CHECK(seen() == "<unset>\n");
}

// Before the fix each of a child's event lists was a std::deque, which allocates when it is made
// and again when it is moved: a child nobody listened to held about 4 KB of heap (500 children
// took the parent's peak RSS from 3.4 MB to 5.5 MB). mallinfo2() sees glibc's heap only, so the
// bound is checked without a sanitizer's allocator.
TEST_CASE("a child whose events nobody listens to holds under 2 KB of the parent's heap",
          "[spawn]") {
  asio::io_context io;
  constexpr int n = 200;
  std::vector<childproc::child_process> children;
  children.reserve(n);
  const auto in_use = [] { return static_cast<double>(::mallinfo2().uordblks); };
  childproc::spawn(io, test::helper, {"exit", "0"}).kill(); // the first spawn's one-time state
  const double before = in_use();
  for (int i = 0; i < n; ++i)
    children.push_back(childproc::spawn(
        io, test::helper, {"sleep", "30000"},
        {.stdio = {childproc::stdio::ignore, childproc::stdio::ignore, childproc::stdio::ignore}}));
  const double per_child = (in_use() - before) / n;
  for (auto& child : children)
    child.kill();
  io.run();
  if (!test::sanitized)
    CHECK(per_child < 2048);
}
