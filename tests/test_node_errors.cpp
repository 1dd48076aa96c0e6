// Node's error surface: codes a user can test, error fields, messages, signal names, absent
// streams, stdio forms and the environment's order (issue 10).
#include "common.hpp"

#include <childproc/pool.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <future>

namespace {

const std::string missing = "/nonexistent/childproc-missing-program";

// What a test records of one boost error_code.
struct seen_code {
  int value = 0;
  std::string category;
  bool is_enoent = false;
};

seen_code seen(const boost::system::error_code& ec) {
  return {ec.value(), ec.category().name(), ec == std::errc::no_such_file_or_directory};
}
seen_code seen(const std::error_code& ec) {
  return {ec.value(), ec.category().name(), ec == std::errc::no_such_file_or_directory};
}

void check_enoent(const seen_code& s) {
  INFO("value " << s.value << " category " << s.category);
  CHECK(s.value == ENOENT);
  CHECK(s.category == "system");
  CHECK(s.is_enoent);
}

} // namespace

// Before the fix: value 1238018002 category std:unknown in the callback, future and awaitable
// forms (Boost 1.81 wraps a std::error_code of std::system_category opaquely).
TEST_CASE("an OS error arrives as its errno in the system category in every form",
          "[node-errors]") {
  asio::io_context io;
  std::vector<seen_code> got;
  childproc::async_exec_file(io, missing, {},
                             [&](boost::system::error_code ec, auto) { got.push_back(seen(ec)); });
  auto child = childproc::spawn(io, missing);
  child.async_wait([&](boost::system::error_code ec, auto) { got.push_back(seen(ec)); });
  auto waited = childproc::spawn(io, missing);
  auto future = waited.async_wait(asio::use_future);
  auto awaited = childproc::spawn(io, missing);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await awaited.async_wait(asio::use_awaitable);
        } catch (const std::system_error& e) {
          got.push_back(seen(e.code()));
        } catch (const boost::system::system_error& e) {
          got.push_back(seen(e.code()));
        }
      },
      asio::detached);
  io.run();
  try {
    future.get();
  } catch (const std::system_error& e) {
    got.push_back(seen(e.code()));
  } catch (const boost::system::system_error& e) {
    got.push_back(seen(e.code()));
  }
  std::error_code sync_ec;
  childproc::exec_file_sync(missing, {}, {}, sync_ec);
  got.push_back(seen(sync_ec));
  got.push_back(seen(childproc::spawn_sync(missing).error.value().code()));

  REQUIRE(got.size() == 6);
  for (const auto& s : got)
    check_enoent(s);
}

// Before the fix: the callback form gave category "std:unknown" and a value other than
// errc::nonzero_exit; a std code converted to boost was not in "childproc" either.
TEST_CASE("childproc's own codes arrive in the category named childproc in every form",
          "[node-errors]") {
  const int nonzero = static_cast<int>(childproc::errc::nonzero_exit);
  asio::io_context io;
  std::vector<std::pair<int, std::string>> got;
  childproc::async_exec_file(io, test::helper, {"exit", "3"},
                             [&](boost::system::error_code ec, auto) {
                               got.emplace_back(ec.value(), ec.category().name());
                             });
  auto future = childproc::async_exec_file(io, test::helper, {"exit", "3"}, asio::use_future);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        std::vector<std::string> args{"exit", "3"};
        try {
          co_await childproc::async_exec_file(ex, test::helper, args, asio::use_awaitable);
        } catch (const childproc::exec_error& e) {
          got.emplace_back(e.code().value(), e.code().category().name());
        }
      },
      asio::detached);
  io.run();
  try {
    future.get();
  } catch (const childproc::exec_error& e) {
    got.emplace_back(e.code().value(), e.code().category().name());
  }
  std::error_code sync_ec;
  childproc::exec_file_sync(test::helper, {"exit", "3"}, {}, sync_ec);
  got.emplace_back(sync_ec.value(), sync_ec.category().name());

  REQUIRE(got.size() == 4);
  for (const auto& [value, category] : got) {
    CHECK(value == nonzero);
    CHECK(category == "childproc");
  }
  // The same code, seen as either kind, compares equal to the enum.
  boost::system::error_code as_boost = std::error_code(childproc::errc::timed_out);
  CHECK(std::string(as_boost.category().name()) == "childproc");
  CHECK(as_boost == std::errc::timed_out);
  CHECK(std::error_code(as_boost) == childproc::errc::timed_out);
}

// Before the fix: did not compile (no kill(name), no kill_signal by name), and (test_errors)
// signal_number("SIGFOO") returned 0, which kill() takes as a probe that "succeeds".
TEST_CASE("signals by name: kill and kill_signal take Node's names; an unknown name is an error",
          "[node-errors]") {
  std::error_code ec;
  CHECK(childproc::signal_number("SIGTERM", ec) == SIGTERM);
  CHECK_FALSE(ec);
  CHECK(childproc::signal_number("SIGFOO", ec) == 0);
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK(ec == std::errc::invalid_argument);
  CHECK_THROWS_WITH(childproc::signal_number("SIGFOO"), Catch::Contains("Unknown signal: SIGFOO"));

  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"sleep", "10000"});
  CHECK_FALSE(child.kill("SIGFOO", ec));
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK_THROWS_AS(child.kill("SIGFOO"), std::system_error);
  CHECK_FALSE(child.killed()); // nothing was sent, not even a probe
  std::optional<int> signal;
  child.on_exit([&](std::optional<int>, std::optional<int> s) { signal = s; });
  CHECK(child.kill("SIGINT"));
  io.run();
  CHECK(signal == SIGINT);

  asio::io_context io2;
  childproc::spawn_options by_name{.timeout = std::chrono::milliseconds(50),
                                   .kill_signal = "SIGUSR1"};
  auto timed = childproc::spawn(io2, test::helper, {"sleep", "10000"}, by_name);
  std::optional<int> timed_signal;
  timed.on_exit([&](std::optional<int>, std::optional<int> s) { timed_signal = s; });
  io2.run();
  CHECK(timed_signal == SIGUSR1);

  childproc::spawn_options unknown{.kill_signal = "SIGFOO"};
  auto none = childproc::spawn(io2, test::helper, {"exit", "0"}, unknown, ec);
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK_FALSE(none);
}

// Before the fix: async_wait's future said "No such file or directory [system:2]"; spawn_sync's
// timeout "Connection timed out"; exec with a missing cwd "spawn true ENOENT"; exec_file
// "spawn /nonexistent/childproc-missing-program a b ENOENT".
TEST_CASE("error messages name the program and the failed step in Node's words", "[node-errors]") {
  asio::io_context io;
  auto child = childproc::spawn(io, missing);
  auto future = child.async_wait(asio::use_future);
  io.run();
  std::string waited;
  try {
    future.get();
  } catch (const std::exception& e) {
    waited = e.what();
  }
  CHECK_THAT(waited, Catch::StartsWith("spawn " + missing + " ENOENT"));

  childproc::spawn_sync_options quick{.timeout = std::chrono::milliseconds(50)};
  auto timed = childproc::spawn_sync(test::helper, {"sleep", "10000"}, quick);
  REQUIRE(timed.error);
  CHECK_THAT(timed.error->what(), Catch::StartsWith("spawnSync " + test::helper + " ETIMEDOUT"));

  std::string no_cwd, no_file;
  try {
    childproc::exec_sync("true", {.cwd = "/nonexistent/childproc-dir"});
  } catch (const childproc::exec_error& e) {
    no_cwd = e.what();
  }
  CHECK_THAT(no_cwd, Catch::StartsWith("spawn /bin/sh ENOENT (chdir)"));
  try {
    childproc::exec_file_sync(missing, {"a", "b"});
  } catch (const childproc::exec_error& e) {
    no_file = e.what();
  }
  CHECK_THAT(no_file, Catch::StartsWith("spawn " + missing + " ENOENT"));
  CHECK_THAT(no_file, !Catch::Contains(" a b"));
}

namespace {

// One failing exec_file run, and what its error must carry.
struct failing_run {
  std::string name;
  std::string file;
  std::vector<std::string> args;
  childproc::exec_options options;
  std::error_code async_code, sync_code;
  std::string syscall; // empty: not a launch failure
  std::optional<int> exit_code, signal;
  bool killed = false;
};

std::vector<failing_run> failing_runs() {
  using namespace std::chrono_literals;
  const auto sys = [](int e) { return std::error_code(e, std::system_category()); };
  std::vector<failing_run> runs;
  runs.push_back({"ENOENT",
                  missing,
                  {"x"},
                  {},
                  sys(ENOENT),
                  sys(ENOENT),
                  "spawn " + missing,
                  std::nullopt,
                  std::nullopt,
                  false});
  runs.push_back({"EACCES",
                  "/etc/passwd",
                  {"x"},
                  {},
                  sys(EACCES),
                  sys(EACCES),
                  "spawn /etc/passwd",
                  std::nullopt,
                  std::nullopt,
                  false});
  runs.push_back({"timeout",
                  test::helper,
                  {"sleep", "10000"},
                  {.timeout = 50ms},
                  childproc::errc::timed_out,
                  childproc::errc::timed_out,
                  "",
                  std::nullopt,
                  SIGTERM,
                  true});
  runs.push_back({"max_buffer",
                  test::helper,
                  {"out", "10000000"},
                  {.max_buffer = 10},
                  childproc::errc::max_buffer_exceeded,
                  sys(ENOBUFS),
                  "",
                  std::nullopt,
                  SIGTERM,
                  true});
  runs.push_back({"exit 3",
                  test::helper,
                  {"exit", "3"},
                  {},
                  childproc::errc::nonzero_exit,
                  childproc::errc::nonzero_exit,
                  "",
                  3,
                  std::nullopt,
                  false});
  return runs;
}

void check_fields(const failing_run& run, const childproc::exec_error& e, bool sync) {
  INFO(run.name << (sync ? " (sync)" : " (async)") << ": " << e.what());
  CHECK(e.code() == (sync ? run.sync_code : run.async_code));
  CHECK(e.syscall() == run.syscall);
  CHECK(e.path() == (run.syscall.empty() ? "" : run.file));
  CHECK(e.spawn_args() == (run.syscall.empty() ? std::vector<std::string>{} : run.args));
  CHECK(e.cmd() ==
        run.file + " " + run.args.at(0) + (run.args.size() > 1 ? " " + run.args[1] : ""));
  CHECK(e.exit_code() == run.exit_code);
  CHECK(e.signal() == run.signal);
  CHECK(e.killed() == run.killed);
  CHECK(e.result().pid.has_value() == run.syscall.empty());
  // Node's err.stdout / err.stderr: what was captured; "" after a failed launch (see
  // node-differences.md: Node's sync forms give null there), with launch_error set.
  CHECK(e.result().launch_error.has_value() == !run.syscall.empty());
  if (run.name == "max_buffer")
    CHECK((sync ? e.result().out.size() > 10 : e.result().out.size() == 10));
  else
    CHECK(e.result().out.empty());
  CHECK(e.result().err.empty());
}

} // namespace

// Before the fix: did not compile: exec_error had no syscall(), path() or spawn_args(), and
// spawn_sync_result::error was a bare error_code (no syscall, path, spawnargs).
TEST_CASE("exec errors carry Node's fields in every form", "[node-errors]") {
  for (const auto& run : failing_runs()) {
    asio::io_context io;
    std::vector<childproc::exec_error> async_errors;
    childproc::async_exec_file(io, run.file, run.args, run.options,
                               [&](boost::system::error_code ec, childproc::exec_result r) {
                                 async_errors.emplace_back(ec, std::move(r));
                               });
    auto future = childproc::async_exec_file(io, run.file, run.args, run.options, asio::use_future);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto ex = co_await asio::this_coro::executor;
          const auto options = run.options;
          try {
            co_await childproc::async_exec_file(ex, run.file, run.args, options,
                                                asio::use_awaitable);
          } catch (const childproc::exec_error& e) {
            async_errors.push_back(e);
          }
        },
        asio::detached);
    io.run();
    try {
      future.get();
    } catch (const childproc::exec_error& e) {
      async_errors.push_back(e);
    }
    REQUIRE(async_errors.size() == 3);
    for (const auto& e : async_errors)
      check_fields(run, e, false);

    try {
      childproc::exec_file_sync(run.file, run.args, run.options);
      FAIL("no error");
    } catch (const childproc::exec_error& e) {
      check_fields(run, e, true);
    }
    std::error_code ec;
    auto r = childproc::exec_file_sync(run.file, run.args, run.options, ec);
    check_fields(run, childproc::exec_error(ec, std::move(r)), true);
  }
}

// Before the fix: did not compile: spawn_sync_result::error was a bare error_code.
TEST_CASE("spawn_sync's error carries Node's syscall, path and spawnargs", "[node-errors]") {
  using namespace std::chrono_literals;
  const auto missing_run = childproc::spawn_sync(missing, {"x"});
  REQUIRE(missing_run.error);
  CHECK(missing_run.error->code() == std::errc::no_such_file_or_directory);
  CHECK(missing_run.error->syscall() == "spawnSync " + missing);
  CHECK(missing_run.error->path() == missing);
  CHECK(missing_run.error->spawn_args() == std::vector<std::string>{"x"});
  childproc::spawn_sync_options quick{.timeout = 50ms};
  const auto timed = childproc::spawn_sync(test::helper, {"sleep", "10000"}, quick);
  REQUIRE(timed.error);
  CHECK(timed.error->code() == std::errc::timed_out);
  CHECK(timed.error->syscall() == "spawnSync " + test::helper);
  CHECK(timed.error->spawn_args() == std::vector<std::string>{"sleep", "10000"});
  CHECK(timed.signal == SIGTERM);
  childproc::spawn_sync_options small{.max_buffer = 10};
  const auto over = childproc::spawn_sync(test::helper, {"out", "10000000"}, small);
  REQUIRE(over.error);
  CHECK(over.error->code() == std::errc::no_buffer_space);
  CHECK(over.error->syscall() == "spawnSync " + test::helper);
}

// Shows docs/node-differences.md's entry (Node's execSync passes stderr through).
TEST_CASE("exec_sync captures stderr in the result and the error", "[node-errors]") {
  CHECK(childproc::exec_sync("echo said >&2").err == "said\n");
  try {
    childproc::exec_sync("echo failed >&2; exit 2");
    FAIL("no throw");
  } catch (const childproc::exec_error& e) {
    CHECK(e.result().err == "failed\n");
    CHECK_THAT(e.what(), Catch::Contains("failed\n"));
  }
}

// Before the fix: the child printed "A=4\nB=5\nM=3\nZ=6\n": env_map was a std::map, sorted.
TEST_CASE("the child sees its environment in the order given", "[node-errors][env]") {
  childproc::env_map env{{"Z", "1"}, {"A", "2"}, {"GONE", std::nullopt}, {"M", "3"}};
  env["A"] = "4"; // an existing name keeps its place
  childproc::spawn_sync_options options{.env = env, .env_overrides = {{"B", "5"}, {"Z", "6"}}};
  const auto r = childproc::spawn_sync("/usr/bin/env", {}, options);
  CHECK(r.out == "Z=6\nA=4\nM=3\nB=5\n");
}

// Before the fix: did not compile: spawn_sync_result had no `output`, and `out`/`err` were
// std::string, "" for a slot that is no pipe and after a failed launch (Node's null).
TEST_CASE("streams that do not exist are absent in spawn_sync's result, as Node's null",
          "[node-errors][absent]") {
  namespace stdio = childproc::stdio;
  const auto piped = childproc::spawn_sync(test::helper, {"echo", "hi"});
  REQUIRE(piped.output);
  REQUIRE(piped.output->size() == 3);
  CHECK_FALSE((*piped.output)[0]); // stdin is written, never read: Node's output[0] is null
  CHECK((*piped.output)[1] == "hi");
  CHECK((*piped.output)[2] == "");
  CHECK(piped.out == "hi");
  CHECK(piped.err == ""); // a pipe that said nothing is an empty string, not absent

  childproc::spawn_sync_options not_piped{.stdio = {stdio::pipe, stdio::inherit, stdio::ignore}};
  const auto unpiped = childproc::spawn_sync(test::helper, {"exit", "0"}, not_piped);
  CHECK_FALSE(unpiped.error);
  CHECK_FALSE(unpiped.out);
  CHECK_FALSE(unpiped.err);
  REQUIRE(unpiped.output);
  CHECK(unpiped.output->size() == 3);
  CHECK(std::none_of(unpiped.output->begin(), unpiped.output->end(),
                     [](const auto& s) { return s.has_value(); }));

  childproc::spawn_sync_options extra{
      .stdio = {stdio::pipe, stdio::pipe, stdio::pipe, stdio::pipe}};
  const auto fourth = childproc::spawn_sync(test::helper, {"write-fd", "3", "three"}, extra);
  REQUIRE(fourth.output);
  REQUIRE(fourth.output->size() == 4);
  CHECK((*fourth.output)[3] == "three");

  const auto failed = childproc::spawn_sync(missing);
  REQUIRE(failed.error);
  CHECK_FALSE(failed.out);
  CHECK_FALSE(failed.err);
  CHECK_FALSE(failed.output); // Node: output, stdout and stderr are all null
  CHECK_FALSE(failed.pid);
  CHECK_FALSE(failed.status);
}

namespace {

using test::run_until;

} // namespace

// Before the fix: did not compile: pool_options::kill_signal was an int.
TEST_CASE("pool_options::kill_signal takes a signal by name; an unknown name is an error",
          "[node-errors][pool]") {
  using namespace std::chrono_literals;
  asio::io_context io;
  childproc::pool_options options{.program = test::helper,
                                  .args = {"pool-worker"},
                                  .min_workers = 1,
                                  .max_workers = 1,
                                  .task_timeout = 200ms,
                                  .kill_signal = "SIGUSR1"};
  childproc::pool p(io, options);
  std::vector<childproc::exit_status> exits;
  p.on_worker_exit([&](pid_t, const childproc::exit_status& s) { exits.push_back(s); });
  bool done = false;
  boost::system::error_code task_ec;
  p.async_run(childproc::message(20000), childproc::run_options{.name = "sleep"},
              [&](boost::system::error_code ec, childproc::message) {
                done = true;
                task_ec = ec;
              });
  REQUIRE(run_until(
      io, [&] { return done && !exits.empty(); }, 15s));
  CHECK(task_ec == childproc::errc::timed_out);
  CHECK(exits[0].signal == SIGUSR1);
  p.destroy();
  io.restart();
  io.run_for(10s);

  options.kill_signal = "SIGFOO";
  try {
    childproc::pool unknown(io, options);
    FAIL("no throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == childproc::errc::unknown_signal);
  }
}

namespace {

bool have_node() {
  return childproc::spawn_sync("node", {"--version"},
                               {.stdio = {childproc::stdio::ignore, childproc::stdio::ignore,
                                          childproc::stdio::ignore}})
             .status == 0;
}

} // namespace

// Before the fix: did not compile: there was no stdio::ipc (spawn had no channel; fork's was
// always after the last slot) and no stdio_count().
TEST_CASE("stdio::ipc at slot 1 gives a node child its channel there, named by NODE_CHANNEL_FD",
          "[node-errors][ipc]") {
  if (!have_node()) {
    WARN("node is not on PATH: skipped");
    return;
  }
  namespace stdio = childproc::stdio;
  // Node deletes NODE_CHANNEL_FD from its process.env at start-up: a shell reports it on
  // stderr, then becomes the node child, which says whether its fd 1 is the channel's socket.
  const std::string script = R"(
    process.send({socket: require('fs').fstatSync(1).isSocket()});
    process.on('message', (m) => { process.send({echo: m}); process.disconnect(); });)";
  asio::io_context io;
  auto child = childproc::spawn(
      io, "/bin/sh",
      {"-c", R"(echo "NODE_CHANNEL_FD=$NODE_CHANNEL_FD" >&2; exec node -e "$0")", script},
      {.stdio = {stdio::pipe, stdio::ipc, stdio::pipe}});
  CHECK(child.stdio_count() == 3);
  CHECK_FALSE(child.has_pipe(1)); // Node's child.stdio[1] is null: the slot is the channel
  REQUIRE(child.has_channel());
  std::vector<std::string> got;
  std::string err;
  child.err().on_data([&](std::string_view d) { err += d; });
  child.on_message([&](const childproc::message& m) {
    got.push_back(boost::json::serialize(m.json()));
    if (got.size() == 1)
      child.send(childproc::message::from(boost::json::object{{"hello", 1}}));
  });
  std::optional<int> code;
  child.on_close([&](std::optional<int> c, std::optional<int>) { code = c; });
  io.run();
  CHECK(err == "NODE_CHANNEL_FD=1\n");
  CHECK(got == std::vector<std::string>{R"({"socket":true})", R"({"echo":{"hello":1}})"});
  CHECK(code == 0);
}

// Before the fix: did not compile (no stdio::ipc); fork with stdio {pipe, pipe, pipe} counted
// as "not given" and the child inherited 0..2 (has_pipe(1) was false).
TEST_CASE("fork's stdio: not given is Node's default, a given table is used as it is",
          "[node-errors][ipc]") {
  namespace stdio = childproc::stdio;
  const auto channel_fd = [](std::vector<childproc::stdio_spec> table) {
    asio::io_context io;
    std::string out;
    auto child = childproc::fork(io, test::helper, {"env", "CHILDPROC_CHANNEL_FD"},
                                 {.stdio = std::move(table)});
    const int count = child.stdio_count();
    REQUIRE(child.has_pipe(1));
    child.out().on_data([&](std::string_view d) { out += d; });
    child.on_exit([&](auto, auto) { child.disconnect(); });
    io.run();
    return std::to_string(count) + " " + out;
  };
  CHECK(channel_fd({stdio::pipe, stdio::pipe, stdio::pipe, stdio::ipc}) == "4 3\n");
  CHECK(channel_fd({stdio::ignore, stdio::pipe, stdio::ignore, stdio::ignore, stdio::ipc}) ==
        "5 4\n");

  asio::io_context io;
  auto inherited = childproc::fork(io, test::helper, {"exit", "0"});
  CHECK(inherited.stdio_count() == 4); // 0..2 inherited and the channel at 3
  CHECK_FALSE(inherited.has_pipe(1));
  auto silent = childproc::fork(io, test::helper, {"exit", "0"}, {.silent = true});
  CHECK(silent.stdio_count() == 4);
  CHECK(silent.has_pipe(1));
  inherited.on_exit([&](auto, auto) { inherited.disconnect(); });
  silent.on_exit([&](auto, auto) { silent.disconnect(); });
  io.run();
}

// Before the fix: did not compile (no stdio::ipc, no errc::ipc_*): Node's ERR_IPC_ONE_PIPE,
// ERR_CHILD_PROCESS_IPC_REQUIRED and ERR_IPC_SYNC_FORK had no counterpart.
TEST_CASE("Node's stdio validation: one ipc at most, fork needs one, the sync forms none",
          "[node-errors][ipc]") {
  namespace stdio = childproc::stdio;
  using childproc::errc;
  asio::io_context io;
  const auto thrown = [](auto&& call) -> std::pair<std::error_code, std::string> {
    try {
      call();
    } catch (const std::system_error& e) {
      return {e.code(), e.what()};
    }
    return {};
  };
  const auto two = thrown([&] {
    childproc::spawn(io, test::helper, {"exit", "0"},
                     {.stdio = {stdio::pipe, stdio::ipc, stdio::ipc}});
  });
  CHECK(two.first == errc::ipc_one_pipe);
  CHECK(two.first == std::errc::invalid_argument);
  CHECK_THAT(two.second, Catch::Contains("only one IPC pipe"));

  const auto none = thrown([&] {
    childproc::fork(io, test::helper, {"exit", "0"},
                    {.stdio = {stdio::pipe, stdio::pipe, stdio::pipe}});
  });
  CHECK(none.first == errc::ipc_required);
  CHECK_THAT(none.second, Catch::Contains("missing value 'ipc' in options.stdio"));

  childproc::spawn_sync_options with_ipc{
      .stdio = {stdio::pipe, stdio::pipe, stdio::pipe, stdio::ipc}};
  const auto sync = thrown([&] { childproc::spawn_sync(test::helper, {"exit", "0"}, with_ipc); });
  CHECK(sync.first == errc::ipc_sync);
  CHECK_THAT(sync.second, Catch::Contains("spawnSync " + test::helper));
  std::error_code ec;
  childproc::exec_file_sync(test::helper, {"exit", "0"}, with_ipc, ec);
  CHECK(ec == errc::ipc_sync);
  CHECK(test::zombie_children() == 0);
}

// Before the fix: did not compile: stdio_count() did not exist.
TEST_CASE("stdio_count is the number of slots the child has", "[node-errors][ipc]") {
  namespace stdio = childproc::stdio;
  asio::io_context io;
  auto three = childproc::spawn(io, test::helper, {"exit", "0"});
  auto five = childproc::spawn(
      io, test::helper, {"exit", "0"},
      {.stdio = {stdio::ignore, stdio::ignore, stdio::ignore, stdio::ignore, stdio::pipe}});
  auto failed = childproc::spawn(io, missing);
  CHECK(three.stdio_count() == 3);
  CHECK(five.stdio_count() == 5);
  CHECK(failed.stdio_count() == 3);
  CHECK(childproc::child_process().stdio_count() == 0);
  io.run();
}

namespace {

// A shell that exits at once while a grandchild keeps its stdout, and writes "late" there once
// the test writes a line to the shell's stdin (which the grandchild reads on fd 3).
const std::string holds_stdout = "exec 3<&0; (read x <&3; echo late) & echo early";

} // namespace

// Before the fix: did not compile: there was no wait for `close`, only async_wait at `exit`.
TEST_CASE("async_wait_close completes at close with the status, after a grandchild's output",
          "[node-errors][close-wait]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "/bin/sh", {"-c", holds_stdout});
  std::string out, at_exit, at_close;
  std::vector<std::string> events;
  child.out().on_data([&](std::string_view d) { out += d; });
  child.on_close([&](auto, auto) { events.push_back("close"); });
  child.async_wait([&](boost::system::error_code ec, childproc::exit_status st) {
    CHECK(!ec);
    CHECK(st.code == 0);
    at_exit = out;
    events.push_back("exit wait");
    child.in().write("go\n");
    child.in().end();
  });
  std::optional<childproc::exit_status> closed;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        closed = co_await child.async_wait_close(asio::use_awaitable);
        at_close = out;
        events.push_back("close wait");
      },
      asio::detached);
  io.run();
  CHECK(at_exit.find("late") == std::string::npos); // written only after the exit wait
  CHECK(at_close == "early\nlate\n");
  REQUIRE(closed);
  CHECK(closed->code == 0);
  CHECK(events == std::vector<std::string>{"exit wait", "close", "close wait"});

  // A wait started after `close` completes at once with the status; a failed launch's with its
  // error, as async_wait's.
  boost::system::error_code late_ec;
  std::optional<int> late_code;
  child.async_wait_close([&](boost::system::error_code ec, childproc::exit_status st) {
    late_ec = ec;
    late_code = st.code;
  });
  auto failed = childproc::spawn(io, missing);
  boost::system::error_code failed_ec;
  failed.async_wait_close([&](boost::system::error_code ec, auto) { failed_ec = ec; });
  io.restart();
  io.run();
  CHECK(!late_ec);
  CHECK(late_code == 0);
  CHECK(failed_ec.value() == ENOENT);
}

// Before the fix: did not compile (no async_wait_close).
TEST_CASE("cancelling async_wait_close after the exit completes it without waiting for the "
          "streams",
          "[node-errors][close-wait]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "/bin/sh", {"-c", holds_stdout});
  std::string out;
  child.out().on_data([&](std::string_view d) { out += d; });
  asio::cancellation_signal cancel;
  boost::system::error_code close_ec;
  std::optional<int> close_code;
  std::string at_cancelled;
  child.async_wait_close(asio::bind_cancellation_slot(
      cancel.slot(), [&](boost::system::error_code ec, childproc::exit_status st) {
        close_ec = ec;
        close_code = st.code;
        at_cancelled = out;
        child.in().write("go\n"); // now let the grandchild finish
        child.in().end();
      }));
  child.async_wait(
      [&](boost::system::error_code, auto) { cancel.emit(asio::cancellation_type::terminal); });
  bool closed = false;
  child.on_close([&](auto, auto) { closed = true; });
  io.run();
  CHECK(close_ec == asio::error::operation_aborted);
  CHECK(close_code == 0);
  CHECK(at_cancelled.find("late") == std::string::npos);
  CHECK(closed);
  CHECK(out == "early\nlate\n");
}

// Before the fix: FAILED: CHECK( slot_kept ) with expansion: false (the wait completed inside its
// own cancellation handler, which cleared the slot, so destroyed the handler, while it ran).
TEST_CASE("cancelling async_wait_close after the exit completes it on a later turn",
          "[node-errors][close-wait]") {
  asio::io_context io;
  auto child = childproc::spawn(io, "/bin/sh", {"-c", holds_stdout});
  child.out().on_data([](std::string_view) {});
  asio::cancellation_signal cancel;
  std::optional<boost::system::error_code> close_ec;
  child.async_wait_close(asio::bind_cancellation_slot(
      cancel.slot(), [&](boost::system::error_code ec, childproc::exit_status) {
        close_ec = ec;
        child.in().write("go\n"); // now let the grandchild finish
        child.in().end();
      }));
  bool slot_kept = false, completed_inline = false;
  child.async_wait([&](boost::system::error_code, auto) {
    cancel.emit(asio::cancellation_type::terminal);
    slot_kept = cancel.slot().has_handler(); // the operation is still the slot's until it ends
    completed_inline = close_ec.has_value();
  });
  io.run();
  CHECK(slot_kept);
  CHECK_FALSE(completed_inline);
  CHECK(close_ec == asio::error::operation_aborted);
}
