// spawn(): from Node's arguments to a launch request, and from the launch to a child_process.
#include "child_state.hpp"
#include "posix/child_plan.hpp"
#include "posix/launcher.hpp"

#include <childproc/spawn.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <mutex>
#include <unistd.h>

extern char** environ;

namespace childproc {
inline namespace v1 {
namespace {

using detail::posix::unique_fd;

bool has_nul(std::string_view s) noexcept {
  return s.find('\0') != std::string_view::npos;
}

// Node's rule: these launch failures are events on the handle; everything else is thrown.
bool is_event_error(const std::error_code& ec, spawn_step step) noexcept {
  if (ec.category() != std::system_category())
    return false;
  switch (ec.value()) {
  case ENOENT:
  case EACCES:
    // Beyond Node: a missing cwd is the caller's error, not a missing program.
    return step == spawn_step::execve;
  case EAGAIN:
  case EMFILE:
  case ENFILE:
    return true;
  default:
    return false;
  }
}

std::vector<std::string> args_after_argv0(const std::vector<std::string>& argv) {
  return argv.size() > 1 ? std::vector<std::string>(argv.begin() + 1, argv.end())
                         : std::vector<std::string>{};
}

struct prepared {
  std::string file;              // what spawn_file() reports
  std::vector<std::string> argv; // what spawn_args() reports
  detail::posix::launch_request request;
  std::vector<unique_fd> parent_ends; // by slot: the parent's end of each pipe
  std::vector<unique_fd> child_ends;  // kept open until the launch is done
  unique_fd dev_null;
};

// Validates the options and builds everything the launch needs. Sets `ec` (and `step` for
// failures in creating pipes) on failure.
void prepare(prepared& p, std::string file, std::vector<std::string> args, const spawn_options& o,
             std::error_code& ec, spawn_step& step) {
  step = spawn_step::none;
  const auto invalid = [&] { ec = make_error_code(errc::invalid_argument); };

  const bool use_shell = o.shell.enabled();
  if (file.empty() || has_nul(file))
    return invalid();
  for (const auto& a : args)
    if (has_nul(a))
      return invalid();
  if (has_nul(o.cwd) || (o.argv0 && has_nul(*o.argv0)))
    return invalid();
  if (o.kill_signal <= 0 || o.kill_signal >= NSIG)
    return invalid();
  if (o.detached && o.process_group)
    return invalid();
  if (o.stdio.size() > static_cast<std::size_t>(detail::posix::max_stdio_slots))
    return invalid();
  if (o.timeout.count() < 0 || o.kill_after.count() < 0)
    return invalid();
  if (o.pipe_size > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    return invalid();

  if (use_shell) {
    std::string shell = o.shell.path();
    if (has_nul(shell))
      return invalid();
    // Node: the file and the arguments joined by spaces, unquoted.
    std::string command = file;
    for (const auto& a : args)
      command += ' ' + a;
    p.argv = {o.argv0.value_or(shell), "-c", std::move(command)};
    p.file = std::move(shell);
  } else {
    p.argv.reserve(args.size() + 1);
    p.argv.push_back(o.argv0.value_or(file));
    for (auto& a : args)
      p.argv.push_back(std::move(a));
    p.file = std::move(file);
  }

  // The environment: the parent's or the given one, then the overrides.
  env_map env = o.env ? *o.env : current_env();
  for (const auto& [name, value] : o.env_overrides)
    env[name] = value;
  std::optional<std::string> path_env;
  auto& envp = p.request.envp;
  envp.reserve(env.size());
  for (const auto& [name, value] : env) {
    if (!value)
      continue; // Node leaves out variables whose value is undefined
    if (name.empty() || has_nul(name) || has_nul(*value) || name.find('=') != std::string::npos)
      return invalid();
    if (name == "PATH")
      path_env = *value;
    envp.push_back(name + '=' + *value);
  }

  p.request.candidates = detail::posix::exec_candidates(p.file, path_env);
  p.request.argv = p.argv;
  p.request.cwd = o.cwd;
  p.request.new_session = o.detached;
  p.request.process_group = o.process_group;
  p.request.parent_death_kill = o.kill_on_parent_death;
  p.request.uid = o.uid;
  p.request.gid = o.gid;
  p.request.want_pidfd = detail::posix::pidfd_enabled();
  const char* close_mode = std::getenv("CHILDPROC_CLOSE_FDS");
  p.request.use_close_range = !(close_mode && std::strcmp(close_mode, "proc") == 0);

  // stdio: Node fills missing slots among 0..2 with pipes.
  std::vector<stdio_spec> slots = o.stdio;
  while (slots.size() < 3)
    slots.push_back(stdio::pipe);
  if (!o.input.empty() && slots[0] != stdio::pipe)
    return invalid(); // input needs a stdin pipe
  p.request.sources.assign(slots.size(), -1);
  p.parent_ends.resize(slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const int slot = static_cast<int>(i);
    switch (slots[i].kind) {
    case stdio_kind::pipe: {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) < 0) {
        ec.assign(errno, std::system_category());
        step = spawn_step::pipe;
        return;
      }
      unique_fd read_end(fds[0]), write_end(fds[1]);
      // The child's end stays blocking; the parent's end is non-blocking for Asio.
      unique_fd& parent = slot == 0 ? write_end : read_end;
      unique_fd& child = slot == 0 ? read_end : write_end;
      ::fcntl(parent.get(), F_SETFL, ::fcntl(parent.get(), F_GETFL) | O_NONBLOCK);
      if (o.pipe_size > 0 &&
          ::fcntl(parent.get(), F_SETPIPE_SZ, static_cast<int>(o.pipe_size)) < 0) {
        ec.assign(errno, std::system_category());
        step = spawn_step::pipe;
        return;
      }
      p.request.sources[i] = child.get();
      p.parent_ends[i] = std::move(parent);
      p.child_ends.push_back(std::move(child));
      break;
    }
    case stdio_kind::inherit:
      // An inherited fd that the parent does not have open becomes /dev/null, as in libuv.
      if (::fcntl(slot, F_GETFD) >= 0) {
        p.request.sources[i] = slot;
        break;
      }
      [[fallthrough]];
    case stdio_kind::ignore:
      if (!p.dev_null) {
        p.dev_null.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!p.dev_null) {
          ec.assign(errno, std::system_category());
          step = spawn_step::pipe;
          return;
        }
      }
      p.request.sources[i] = p.dev_null.get();
      break;
    case stdio_kind::fd:
      if (slots[i].fd < 0 || ::fcntl(slots[i].fd, F_GETFD) < 0) {
        ec.assign(EBADF, std::system_category());
        return;
      }
      p.request.sources[i] = slots[i].fd;
      break;
    }
  }
}

// One implementation for both forms: the handle, or an empty one with `failure` set.
child_process spawn_impl(const asio::any_io_executor& ex, std::string file,
                         std::vector<std::string> args, const spawn_options& options,
                         std::optional<process_error>& failure) {
  failure.reset();
  prepared p;
  std::error_code ec;
  spawn_step step = spawn_step::none;
  const std::string requested_file = file;
  const std::vector<std::string> requested_args = args;
  prepare(p, std::move(file), std::move(args), options, ec, step);
  std::optional<detail::posix::launch_result> launched;
  if (!ec)
    launched = detail::posix::launch(p.request, ec, step);
  p.child_ends.clear(); // the child has its copies now (or never will)
  p.dev_null.reset();

  if (ec && !is_event_error(ec, step)) {
    const std::string& path = p.file.empty() ? requested_file : p.file;
    failure.emplace(ec, "spawn " + path, path,
                    p.argv.empty() ? requested_args : args_after_argv0(p.argv), step);
    return {};
  }
  auto state = std::make_shared<detail::child_state>(ex, p.file, p.argv, options);
  if (ec) {
    state->launch_failed(
        process_error(ec, "spawn " + p.file, p.file, args_after_argv0(p.argv), step));
  } else {
    state->launched(launched->pid, std::move(launched->pidfd), std::move(p.parent_ends));
    if (!options.input.empty()) {
      // A child that exits without reading its input is not an error: the result is ignored.
      state->in->write(options.input);
      state->in->end();
    }
  }
  return child_process(std::move(state));
}

} // namespace

child_process spawn(const asio::any_io_executor& ex, std::string file,
                    std::vector<std::string> args, spawn_options options,
                    std::error_code& ec) noexcept {
  try {
    std::optional<process_error> failure;
    auto child = spawn_impl(ex, std::move(file), std::move(args), options, failure);
    ec = failure ? failure->code() : std::error_code{};
    return child;
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  } catch (const std::system_error& e) {
    ec = e.code();
  }
  return {};
}

child_process spawn(const asio::any_io_executor& ex, std::string file,
                    std::vector<std::string> args, spawn_options options) {
  std::optional<process_error> failure;
  auto child = spawn_impl(ex, std::move(file), std::move(args), options, failure);
  if (failure)
    throw *failure;
  return child;
}

} // namespace v1
} // namespace childproc
