// Seed 004, "Best Practices › Child Process Management": a worker with a 30 s timeout that
// kills it, killed too once it has answered, and an error handler that clears the timeout.
//
//   const worker = fork('worker.js');
//   const timeout = setTimeout(() => { worker.kill(); }, 30000);
//   worker.on('message', (result) => { clearTimeout(timeout); worker.kill(); });
//   worker.on('error', (err) => { clearTimeout(timeout); console.error('Worker error:', err); });
//
// Three workers run the pattern: one answers, one never does (the timeout kills it), and one
// cannot start (the error handler). setTimeout is an asio::steady_timer. The timeout is 30 s as in
// the snippet; --timeout-ms shortens it (the test passes 500 ms). At the end no child is left:
// each one was reaped (waitpid reports ECHILD).
#include <childproc/childproc.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <sys/wait.h>
#include <unistd.h>

namespace asio = boost::asio;

namespace {

// worker.js: "answer" replies to its task; "hang" takes it and never replies.
int worker(std::string_view kind) {
  asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&, kind](const childproc::message& task) {
    if (kind == "answer")
      parent.send(boost::json::value{{"result", task.json().at("n").to_number<int>() * 2}});
  });
  io.run();
  return 0;
}

// The snippet's pattern, for one worker. The timer and the child are kept alive by the handlers
// until the child's close.
void run_managed(asio::io_context& io, const std::string& name, std::string program,
                 std::vector<std::string> args, std::chrono::milliseconds limit) {
  auto worker = std::make_shared<childproc::child_process>(
      childproc::fork(io, std::move(program), std::move(args)));
  auto timeout = std::make_shared<asio::steady_timer>(io, limit);
  timeout->async_wait([worker, name](boost::system::error_code ec) {
    if (ec)
      return; // cleared
    fmt::print("{}: no answer in time, worker killed\n", name);
    worker->kill();
  });
  worker->on_message([worker, timeout, name](const childproc::message& result) {
    timeout->cancel(); // clearTimeout
    fmt::print("{}: result {}\n", name, boost::json::serialize(result.json()));
    worker->kill();
  });
  worker->on_error([timeout, name](const childproc::process_error& err) {
    timeout->cancel();
    fmt::print("{}: Worker error: {}\n", name, err.what());
  });
  worker->on_close([worker, timeout, name](std::optional<int> code, std::optional<int> signal) {
    fmt::print("{}: closed, {}\n", name,
               signal ? "signal " + childproc::signal_name(*signal)
                      : "code " + std::to_string(code.value_or(-1)));
  });
  // The task goes once the worker runs: a worker that never started has no channel to send on.
  worker->on_spawn([worker] { worker->send(boost::json::value{{"n", 21}}); });
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string_view(argv[1]) == "worker")
    return worker(argv[2]);

  std::chrono::milliseconds limit{30'000};
  if (argc > 2 && std::string_view(argv[1]) == "--timeout-ms")
    limit = std::chrono::milliseconds(std::stol(argv[2]));
  fmt::print("timeout: {} ms\n", limit.count());

  asio::io_context io;
  run_managed(io, "answering worker", childproc::self_exe(), {"worker", "answer"}, limit);
  io.run();
  io.restart();
  run_managed(io, "silent worker", childproc::self_exe(), {"worker", "hang"}, limit);
  io.run();
  io.restart();
  run_managed(io, "missing worker", "./no-such-worker", {}, limit);
  io.run();

  const bool none_left = ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
  fmt::print("every worker reaped, none left: {}\n", none_left);
  return none_left ? 0 : 1;
}
