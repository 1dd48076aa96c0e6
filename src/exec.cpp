// exec / exec_file: spawn, buffer both output streams under max_buffer, and complete at `close`
// with Node's error rules.
#include "asio_error.hpp"
#include "child_state.hpp"
#include "output_limit.hpp"

#include <childproc/exec.hpp>
#include <childproc/spawn.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>

#include <cerrno>
#include <cstring>

namespace childproc {
namespace detail {

// One exec run. Owned by the handlers it attached to the child (so it lives exactly as long as
// the child's state can still call them); it refers to the state weakly, so there is no cycle.
struct exec_run : std::enable_shared_from_this<exec_run> {
  std::weak_ptr<child_state> state;
  exec_result result;
  std::unique_ptr<exec_completion> done;
  std::size_t max_buffer = 0;
  bool sync = false;
  bool over_limit = false;
  bool cancelled = false;
  std::optional<process_error> launch_error;

  void collect(std::string& sink, const char* stream, std::string_view chunk) {
    if (over_limit)
      return; // both pipes are being closed (Node destroys both streams)
    if (sync) {
      // The sync forms keep what they read, the read that passed the limit included (Node's
      // spawnSync).
      sink.append(chunk);
      if (sink.size() > max_buffer)
        hit_limit(stream);
      return;
    }
    const std::size_t room = max_buffer - sink.size();
    if (chunk.size() <= room) {
      sink.append(chunk); // exactly max_buffer bytes is fine
      return;
    }
    sink.append(chunk.substr(0, room)); // keep exactly max_buffer bytes
    hit_limit(stream);
  }

  void hit_limit(const char* stream) {
    over_limit = true;
    result.max_buffer_stream = stream;
    if (auto s = state.lock())
      stop_output(*s);
  }

  void finish() {
    auto s = state.lock();
    if (s && s->status && !s->launch_error)
      result.status = *s->status; // a launch failure has no status (Node: code is the errno name)
    if (s) {
      result.killed = s->killed;
      result.timed_out = s->timed_out;
    }
    boost::system::error_code ec;
    result.launch_error = launch_error;
    if (launch_error)
      ec = to_asio_error(launch_error->code());
    else if (over_limit)
      ec = sync ? std::error_code(ENOBUFS, std::system_category()) // Node's sync ENOBUFS
                : make_error_code(errc::max_buffer_exceeded);
    else if (cancelled)
      ec = asio::error::operation_aborted;
    else if (result.timed_out)
      ec = make_error_code(errc::timed_out);
    else if (result.status.unknown)
      ec = make_error_code(errc::exit_status_unknown); // a failure must not pass for success
    else if (result.status.signal)
      ec = make_error_code(errc::killed);
    else if (result.status.code && *result.status.code != 0)
      ec = make_error_code(errc::nonzero_exit);
    auto completion = std::move(done);
    completion->complete(ec, std::move(result));
  }
};

namespace {

std::string joined(const std::string& file, const std::vector<std::string>& args) {
  std::string command = file;
  for (const auto& a : args)
    command.append(1, ' ').append(a);
  return command;
}

} // namespace

std::shared_ptr<exec_run> start_exec(const asio::any_io_executor& ex, exec_request request,
                                     child_process* handle, std::unique_ptr<exec_completion> done) {
  auto run = std::make_shared<exec_run>();
  run->done = std::move(done);
  run->max_buffer = request.options.max_buffer;
  run->sync = request.sync;
  run->result.command = request.via_shell ? request.file : joined(request.file, request.args);

  exec_options& options = request.options;
  if (request.via_shell && !options.shell.enabled())
    options.shell = true; // exec always runs through a shell; a named shell is kept
  if (!options.process_group && !options.detached)
    options.process_group = 0; // so that library kills reach the whole command
  std::optional<process_error> failure =
      request.sync ? sync_ipc_error("spawnSync", request.file, request.args, options)
                   : std::nullopt;
  child_process child;
  if (!failure)
    child = spawn_reporting(ex, std::move(request.file), std::move(request.args), options, failure);
  if (failure) {
    // A failure spawn() throws (bad cwd, invalid argument): completes with it, never inline.
    asio::post(ex, [run, failure = std::move(*failure)] {
      run->launch_error = failure;
      run->finish();
    });
    return run;
  }

  auto& state = child.state();
  run->state = state;
  state->timeout_until_close = true; // Node clears exec's timeout at close, not at exit
  run->result.pid = child.original_pid();
  if (child.has_pipe(1))
    child.out().on_data(
        [run](std::string_view chunk) { run->collect(run->result.out, "stdout", chunk); });
  if (child.has_pipe(2))
    child.err().on_data(
        [run](std::string_view chunk) { run->collect(run->result.err, "stderr", chunk); });
  child.on_error([run](const process_error& e) {
    if (!run->launch_error)
      run->launch_error = e;
  });
  child.on_close([run](std::optional<int>, std::optional<int>) { run->finish(); });
  if (request.sync && child.has_pipe(0))
    child.in().end(); // after the input, if any (spawn() queued it)
  if (handle)
    *handle = std::move(child);
  return run;
}

void cancel_exec(const std::weak_ptr<exec_run>& weak) {
  auto run = weak.lock();
  if (!run || run->cancelled)
    return;
  run->cancelled = true;
  if (auto s = run->state.lock(); s && s->library_can_signal())
    s->kill_by_library();
}

namespace {

exec_result run_sync(exec_request request, std::error_code& ec) {
  asio::io_context io;
  exec_result out;
  boost::system::error_code got;
  auto on_done = [&](boost::system::error_code e, exec_result r) {
    got = e;
    out = std::move(r);
  };
  start_exec(io.get_executor(), std::move(request), nullptr,
             std::make_unique<exec_completion_for<decltype(on_done)>>(std::move(on_done),
                                                                      io.get_executor()));
  io.run();
  ec = got;
  return out;
}

exec_result run_sync_or_throw(exec_request request) {
  std::error_code ec;
  exec_result result = run_sync(std::move(request), ec);
  if (ec)
    throw exec_error(ec, std::move(result));
  return result;
}

exec_result run_sync_noexcept(exec_request request, std::error_code& ec) noexcept {
  try {
    return run_sync(std::move(request), ec);
  } catch (...) {
    ec = detail::current_exception_code();
  }
  return {};
}

std::string error_text(const std::error_code& ec, const exec_result& r) {
  if (ec == errc::max_buffer_exceeded ||
      (ec == std::errc::no_buffer_space && !r.max_buffer_stream.empty()))
    return r.max_buffer_stream + " maxBuffer length exceeded";
  if (r.launch_error)
    return r.launch_error->what(); // "spawn <file> ENOENT (chdir): ...", as spawn() says it
  std::string text = "Command failed: " + r.command;
  if (!r.err.empty())
    text += "\n" + r.err;
  return text;
}

} // namespace
} // namespace detail

inline namespace v1 {

namespace {

// Node's syscall, path and spawnargs: the failed launch's, none for a child that ran.
process_error node_fields(std::error_code code, const exec_result& r) {
  if (!r.launch_error)
    return {code, {}, {}, {}};
  const process_error& e = *r.launch_error;
  return {code, e.syscall(), e.path(), e.spawn_args(), e.step()};
}

} // namespace

exec_error::exec_error(std::error_code code, exec_result result)
    : process_error(node_fields(code, result)), result_(std::move(result)),
      message_(detail::error_text(code, result_)) {}

exec_result exec_sync(std::string command, exec_options options) {
  return detail::run_sync_or_throw({std::move(command), {}, std::move(options), true, true});
}

exec_result exec_sync(std::string command, exec_options options, std::error_code& ec) noexcept {
  return detail::run_sync_noexcept({std::move(command), {}, std::move(options), true, true}, ec);
}

exec_result exec_file_sync(std::string file, std::vector<std::string> args, exec_options options) {
  return detail::run_sync_or_throw(
      {std::move(file), std::move(args), std::move(options), false, true});
}

exec_result exec_file_sync(std::string file, std::vector<std::string> args, exec_options options,
                           std::error_code& ec) noexcept {
  return detail::run_sync_noexcept(
      {std::move(file), std::move(args), std::move(options), false, true}, ec);
}

} // namespace v1
} // namespace childproc
