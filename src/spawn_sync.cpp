// spawn_sync(): spawn() on a private io_context, run to the child's close.
#include "child_state.hpp"
#include "output_limit.hpp"

#include <childproc/spawn.hpp>

#include <boost/asio/io_context.hpp>

#include <cerrno>

namespace childproc {
inline namespace v1 {
namespace {

spawn_sync_result run_sync(std::string file, std::vector<std::string> args,
                           spawn_sync_options options) {
  asio::io_context io;
  spawn_sync_result result;
  child_process child = spawn(io, std::move(file), std::move(args), options);
  auto& state = *child.state();
  bool over_limit = false;
  const auto collect = [&](std::string& sink) {
    return [&, max = options.max_buffer](std::string_view chunk) {
      if (over_limit)
        return; // the pipes are being closed: nothing more is kept
      // Node keeps what it read, the read that passed the limit included.
      sink.append(chunk);
      if (sink.size() > max) {
        over_limit = true;
        detail::stop_output(state);
      }
    };
  };
  if (child.has_pipe(1))
    child.out().on_data(collect(result.out));
  if (child.has_pipe(2))
    child.err().on_data(collect(result.err));
  child.on_error([&](const process_error& e) { result.error = e.code(); });
  if (child.has_pipe(0))
    child.in().end(); // after the input, if any: spawn() queued it

  io.run();

  result.pid = child.original_pid();
  if (auto st = child.status()) {
    result.exit = *st;
    result.status = st->code;
    result.signal = st->signal;
  }
  if (!result.error) {
    // Node's spawnSync reports these as errno codes (ETIMEDOUT, ENOBUFS).
    if (state.timed_out)
      result.error = std::error_code(ETIMEDOUT, std::system_category());
    else if (over_limit)
      result.error = std::error_code(ENOBUFS, std::system_category());
  } else {
    result.status.reset(); // a launch failure has no exit code
  }
  return result;
}

} // namespace

spawn_sync_result spawn_sync(std::string file, std::vector<std::string> args,
                             spawn_sync_options options) {
  return run_sync(std::move(file), std::move(args), std::move(options));
}

spawn_sync_result spawn_sync(std::string file, std::vector<std::string> args,
                             spawn_sync_options options, std::error_code& ec) noexcept {
  ec.clear();
  try {
    return run_sync(std::move(file), std::move(args), std::move(options));
  } catch (...) {
    ec = detail::current_exception_code();
  }
  return {};
}

} // namespace v1
} // namespace childproc
