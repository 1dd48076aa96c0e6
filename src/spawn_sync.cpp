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
  if (auto refused = detail::sync_ipc_error("spawnSync", file, args, options))
    throw *refused;
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
  // Node's output: what each slot the child writes to gave; null where there is no pipe.
  std::vector<std::optional<std::string>> output(state.readers.size());
  for (int slot = 1; slot < static_cast<int>(output.size()); ++slot) {
    if (!child.has_pipe(slot))
      continue;
    output[slot].emplace();
    child.stdio(slot).on_data(collect(*output[slot]));
  }
  std::optional<process_error> launch_error;
  child.on_error([&](const process_error& e) {
    if (!launch_error)
      launch_error = e;
  });
  if (child.has_pipe(0))
    child.in().end(); // after the input, if any: spawn() queued it

  io.run();

  result.pid = child.original_pid();
  if (auto st = child.status()) {
    result.exit = *st;
    result.status = st->code;
    result.signal = st->signal;
  }
  // Node's spawnSync names every error "spawnSync <file>", and reports these as errno codes.
  const auto sync_error = [&](std::error_code code, spawn_step step) {
    const auto& argv = child.spawn_args();
    return process_error(code, "spawnSync " + child.spawn_file(), child.spawn_file(),
                         {argv.begin() + (argv.empty() ? 0 : 1), argv.end()}, step);
  };
  if (!launch_error) { // a failed launch has no streams (Node's null output, stdout, stderr)
    result.out = output.size() > 1 ? output[1] : std::nullopt;
    result.err = output.size() > 2 ? output[2] : std::nullopt;
    result.output = std::move(output);
  }
  if (launch_error) {
    result.error = sync_error(launch_error->code(), launch_error->step());
    result.status.reset(); // a launch failure has no exit code
  } else if (state.timed_out) {
    result.error = sync_error({ETIMEDOUT, std::system_category()}, spawn_step::none);
  } else if (over_limit) {
    result.error = sync_error({ENOBUFS, std::system_category()}, spawn_step::none);
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
