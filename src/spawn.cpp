// spawn(): from Node's arguments to a launch request, and from the launch to a child_process.
#include "child_state.hpp"
#include "handed_over.hpp"
#include "posix/child_plan.hpp"
#include "posix/launcher.hpp"
#include "posix/unique_fd.hpp"

#include <childproc/spawn.hpp>

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <mutex>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_set>

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
  int ipc_slot = -1; // stdio::ipc's slot, -1 without one
  unique_fd ipc_end; // the parent's end of the channel's socketpair
};

// The channel's protocol: fork() sets it; spawn's 'ipc' speaks Node's, as Node's does.
detail::wire channel_wire(const spawn_options& o) noexcept {
  return o.serialization == serialization::framed ? detail::wire::framed : detail::wire::node_json;
}

// The stdio::ipc slot, -1 without one; Node allows one (ERR_IPC_ONE_PIPE).
int find_ipc_slot(const std::vector<stdio_spec>& table, std::error_code& ec) noexcept {
  int found = -1;
  for (std::size_t i = 0; i < table.size(); ++i) {
    if (table[i].kind != stdio_kind::ipc)
      continue;
    if (found >= 0)
      ec = make_error_code(errc::ipc_one_pipe);
    found = static_cast<int>(i);
  }
  return found;
}

// The variables that tell the child which fd its channel is (Node's, or childproc's own).
void add_channel_variables(env_map& env, int slot, const spawn_options& o) {
  const std::string fd = std::to_string(slot);
  if (channel_wire(o) == detail::wire::framed) {
    env["CHILDPROC_CHANNEL_FD"] = fd;
    env["CHILDPROC_CHANNEL_MAX_MESSAGE"] =
        std::to_string(detail::clamp_max_message(o.max_message_size));
  } else {
    env["NODE_CHANNEL_FD"] = fd;
    env["NODE_CHANNEL_SERIALIZATION_MODE"] = "json";
  }
}

// What can be checked without a system call.
bool valid_request(const std::string& file, const std::vector<std::string>& args,
                   const spawn_options& o) noexcept {
  if (file.empty() || has_nul(file) || has_nul(o.cwd) || (o.argv0 && has_nul(*o.argv0)))
    return false;
  for (const auto& a : args)
    if (has_nul(a))
      return false;
  // A duration past max_timeout would overflow the timer's nanoseconds and fire at once.
  const auto valid_duration = [](std::chrono::milliseconds d) {
    return d.count() >= 0 && d <= max_timeout;
  };
  return o.kill_signal > 0 && o.kill_signal < NSIG && !(o.detached && o.process_group) &&
         o.stdio.size() <= static_cast<std::size_t>(detail::posix::max_stdio_slots) &&
         valid_duration(o.timeout) && valid_duration(o.kill_after) &&
         o.pipe_size <= static_cast<std::size_t>(std::numeric_limits<int>::max()) &&
         !has_nul(o.shell.path());
}

// p.file and p.argv: the program, or the shell with Node's unquoted command line.
void build_command(prepared& p, const std::string& file, const std::vector<std::string>& args,
                   const spawn_options& o) {
  if (o.shell.enabled()) {
    std::string command = file;
    for (const auto& a : args)
      command += ' ' + a;
    p.argv = {o.argv0.value_or(o.shell.path()), "-c", std::move(command)};
    p.file = o.shell.path();
    return;
  }
  p.argv.reserve(args.size() + 1);
  p.argv.push_back(o.argv0.value_or(file));
  for (const auto& a : args)
    p.argv.push_back(a);
  p.file = file;
}

// The parent's variables as the child gets them when nothing is changed: environ's own strings,
// no copies (posix_spawn(environ) passes them so), with current_env()'s rules (entries without a
// name left out, the first definition wins) and the value of PATH. Kept per thread and rebuilt
// only when environ's pointers changed (setenv, putenv and unsetenv change them); nullptr-ended.
const std::vector<char*>& inherited_environment(const char*& path) {
  struct snapshot {
    std::vector<char*> seen, variables;
    const char* path = nullptr;
  };
  static thread_local snapshot last;
  std::size_t n = 0;
  while (environ && environ[n])
    ++n;
  // The same pointers hold the same variables, unless the application reused a putenv()
  // buffer of its own for another one: PATH, whose value is kept, is checked again.
  if (!last.variables.empty() && n == last.seen.size() &&
      std::equal(environ, environ + n, last.seen.begin()) &&
      (!last.path || std::strncmp(last.path - 5, "PATH=", 5) == 0)) {
    path = last.path;
    return last.variables;
  }
  // Built aside and moved in whole: a throw leaves the previous snapshot as it was, never a
  // half-built list without its nullptr.
  snapshot fresh;
  std::unordered_set<std::string_view> names;
  for (std::size_t i = 0; i < n; ++i) {
    const char* eq = std::strchr(environ[i], '=');
    if (!eq || eq == environ[i] ||
        !names.insert({environ[i], static_cast<std::size_t>(eq - environ[i])}).second)
      continue;
    fresh.variables.push_back(environ[i]);
    if (eq - environ[i] == 4 && std::strncmp(environ[i], "PATH", 4) == 0)
      fresh.path = eq + 1;
  }
  fresh.variables.push_back(nullptr);
  fresh.seen.assign(environ, environ + n);
  last = std::move(fresh);
  path = last.path;
  return last.variables;
}

// The environment (the parent's or the given one, then the overrides) and the exec candidates
// found on its PATH. False for a variable that cannot be passed.
bool build_env(prepared& p, const spawn_options& o) {
  if (!o.env && o.env_overrides.empty() && p.ipc_slot < 0) {
    const char* path = nullptr;
    p.request.inherited_env = &inherited_environment(path);
    const bool searched = p.file.find('/') == std::string::npos; // else PATH plays no part
    p.request.candidates = detail::posix::exec_candidates(
        p.file, searched && path ? std::optional<std::string>(path) : std::nullopt);
    return true;
  }
  env_map env = o.env ? *o.env : current_env();
  for (const auto& [name, value] : o.env_overrides)
    env[name] = value;
  if (p.ipc_slot >= 0)
    add_channel_variables(env, p.ipc_slot, o);
  std::optional<std::string> path_env;
  auto& envp = p.request.envp;
  envp.reserve(env.size());
  for (const auto& [name, value] : env) {
    if (!value)
      continue; // Node leaves out variables whose value is undefined
    if (name.empty() || has_nul(name) || has_nul(*value) || name.find('=') != std::string::npos)
      return false;
    if (name == "PATH")
      path_env = *value;
    envp.push_back(name + '=' + *value);
  }
  p.request.candidates = detail::posix::exec_candidates(p.file, path_env);
  return true;
}

// A CLOEXEC pipe with both ends above stdio; the parent's end (the write end for slot 0) is
// non-blocking for Asio, the child's stays blocking. Returns 0 or the errno.
int make_pipe(int slot, std::size_t size, unique_fd& parent, unique_fd& child) noexcept {
  int fds[2];
  unique_fd read_end, write_end;
  if (const int err =
          detail::posix::take_pair_above_stdio(::pipe2(fds, O_CLOEXEC), fds, read_end, write_end))
    return err;
  parent = std::move(slot == 0 ? write_end : read_end);
  child = std::move(slot == 0 ? read_end : write_end);
  detail::posix::set_nonblocking(parent.get());
  if (size > 0 && ::fcntl(parent.get(), F_SETPIPE_SZ, static_cast<int>(size)) < 0)
    return errno;
  return 0;
}

// The channel's socketpair, both ends above stdio, the parent's non-blocking. Returns 0 or the
// errno.
int make_channel_pair(unique_fd& parent, unique_fd& child) noexcept {
  int pair[2];
  if (const int err = detail::posix::take_pair_above_stdio(
          ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), pair, parent, child))
    return err;
  detail::posix::set_nonblocking(parent.get());
  return 0;
}

// One slot's source fd in the child. Sets `ec` and `step` on failure.
void make_slot(prepared& p, std::size_t i, const stdio_spec& spec, std::size_t pipe_size,
               std::error_code& ec, spawn_step& step) {
  const int slot = static_cast<int>(i);
  switch (spec.kind) {
  case stdio_kind::pipe:
  case stdio_kind::ipc: { // a pipe, or the channel's socketpair: the child's end goes in the slot
    unique_fd child;
    const int err = spec.kind == stdio_kind::pipe
                        ? make_pipe(slot, pipe_size, p.parent_ends[i], child)
                        : make_channel_pair(p.ipc_end, child);
    if (err) {
      ec.assign(err, std::system_category());
      step = spawn_step::pipe;
      return;
    }
    p.request.sources[i] = child.get();
    p.child_ends.push_back(std::move(child));
    return;
  }
  case stdio_kind::inherit:
    // An inherited fd that the parent does not have open becomes /dev/null, as in libuv. (The
    // library's own fds are all above 2, so an open one here is the application's.)
    if (::fcntl(slot, F_GETFD) >= 0) {
      p.request.sources[i] = slot;
      return;
    }
    [[fallthrough]];
  case stdio_kind::ignore:
    if (!p.dev_null) {
      p.dev_null.reset(detail::posix::above_stdio(::open("/dev/null", O_RDWR | O_CLOEXEC)));
      if (!p.dev_null) {
        ec.assign(errno, std::system_category());
        step = spawn_step::open_dev_null;
        return;
      }
    }
    p.request.sources[i] = p.dev_null.get();
    return;
  case stdio_kind::fd:
  case stdio_kind::from: // from: taken from the registry first, closed with the child's ends
    if (spec.fd < 0 || ::fcntl(spec.fd, F_GETFD) < 0) {
      ec.assign(EBADF, std::system_category());
      return;
    }
    p.request.sources[i] = spec.fd;
    return;
  }
}

// The stdio table: Node fills missing slots among 0..2 with pipes.
void build_stdio(prepared& p, const spawn_options& o, std::error_code& ec, spawn_step& step) {
  std::vector<stdio_spec> slots = o.stdio;
  while (slots.size() < 3)
    slots.push_back(stdio::pipe);
  if (!o.input.empty() && slots[0] != stdio::pipe) {
    ec = make_error_code(errc::invalid_argument); // input needs a stdin pipe
    return;
  }
  p.request.sources.assign(slots.size(), -1);
  p.parent_ends.resize(slots.size());
  for (std::size_t i = 0; i < slots.size() && !ec; ++i)
    make_slot(p, i, slots[i], o.pipe_size, ec, step);
}

// Validates the options and builds everything the launch needs. Sets `ec` (and `step` for
// failures in creating pipes or opening /dev/null) on failure.
void prepare(prepared& p, const std::string& file, const std::vector<std::string>& args,
             const spawn_options& o, std::error_code& ec, spawn_step& step) {
  step = spawn_step::none;
  if (o.kill_signal.unknown_name()) {
    ec = make_error_code(errc::unknown_signal);
    return;
  }
  if (!valid_request(file, args, o)) {
    ec = make_error_code(errc::invalid_argument);
    return;
  }
  p.ipc_slot = find_ipc_slot(o.stdio, ec);
  if (ec)
    return;
  build_command(p, file, args, o);
  if (!build_env(p, o)) {
    ec = make_error_code(errc::invalid_argument);
    return;
  }
  p.request.argv = &p.argv;
  p.request.cwd = o.cwd;
  p.request.new_session = o.detached;
  p.request.process_group = o.process_group;
  p.request.parent_death_kill = o.kill_on_parent_death;
  p.request.uid = o.uid;
  p.request.gid = o.gid;
  p.request.want_pidfd = detail::posix::pidfd_enabled();
  build_stdio(p, o, ec, step);
}

// Everything that can fail, before the point of no return: the state, its streams over the
// parent's pipe ends, the exit watch, the queued input. A failure sets `ec` and `step`; the
// state is returned when it can still report the failure as events. When prepare() already
// failed (`ec` set), makes only the state and the streams of the pipes made.
std::shared_ptr<detail::child_state> make_state(const asio::any_io_executor& ex, prepared& p,
                                                const spawn_options& options, std::error_code& ec,
                                                spawn_step& step) {
  std::shared_ptr<detail::child_state> state;
  const spawn_step failed_step = step;
  try {
    state = std::make_shared<detail::child_state>(ex, p.file, p.argv, options);
    if (p.ipc_end) // registered now: once the child exists, nothing may fail
      state->attach_channel(std::make_shared<detail::channel_state>(
          ex, std::move(p.ipc_end), channel_wire(options), options.max_message_size));
    step = spawn_step::pipe;
    state->attach_pipes(p.parent_ends);
    if (ec) { // prepare() failed (EMFILE...): only the streams made so far, for the events
      step = failed_step;
      return state;
    }
    step = spawn_step::clone; // the exit watch is part of making the child
    state->prepare_exit_watch();
    step = spawn_step::none;
    if (!options.input.empty()) {
      // A child that exits without reading its input is not an error: the result is ignored.
      state->in->write(options.input);
      state->in->end();
    }
    return state;
  } catch (...) {
    if (!ec)
      ec = detail::current_exception_code();
    else
      step = failed_step;
  }
  return state;
}

// One implementation for both forms: the handle, or an empty one with `failure` set.
child_process spawn_impl(const asio::any_io_executor& ex, std::string file,
                         std::vector<std::string> args, const spawn_options& options,
                         std::optional<process_error>& failure) {
  failure.reset();
  prepared p;
  std::error_code ec;
  // The fds stdio::from() handed over belong to this spawn from its first line: the parent's
  // copy closes with the child's ends, whether the launch happens or not.
  p.child_ends = detail::take_handed_over(options.stdio, ec);
  spawn_step step = spawn_step::none;
  if (!ec)
    prepare(p, file, args, options, ec, step); // copies file and args once, into p.argv
  std::shared_ptr<detail::child_state> state;
  if (!ec || is_event_error(ec, step))
    state = make_state(ex, p, options, ec, step);
  if (!ec) {
    auto launched = detail::posix::launch(p.request, ec, step);
    // The point of no return. Only the pidfd's registration and the post of start() can fail
    // from here on, and then the child was killed and reaped.
    if (launched) {
      ec = state->launched(launched->pid, std::move(launched->pidfd));
      if (ec)
        step = spawn_step::clone;
    }
  }
  p.child_ends.clear(); // the child has its copies now (or never will)
  p.dev_null.reset();

  if (ec && (!state || !is_event_error(ec, step))) {
    if (state)
      state->abandon();
    const std::string& path = p.file.empty() ? file : p.file;
    failure.emplace(ec, "spawn " + path, path, p.argv.empty() ? args : args_after_argv0(p.argv),
                    step);
    return {};
  }
  if (ec)
    state->launch_failed(
        process_error(ec, "spawn " + p.file, p.file, args_after_argv0(p.argv), step));
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
  } catch (...) {
    ec = detail::current_exception_code();
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

namespace detail {

// An exception from the setup before the launch, as an error code: errno values in the system
// category (std::thread reports EAGAIN in the generic one), Asio's too.
std::error_code current_exception_code() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return {ENOMEM, std::system_category()};
  } catch (const std::system_error& e) {
    const bool is_errno = e.code().category() == std::generic_category() ||
                          e.code().category() == std::system_category();
    return is_errno ? std::error_code(e.code().value(), std::system_category()) : e.code();
  } catch (const boost::system::system_error& e) {
    return {e.code().value(), std::system_category()};
  }
}

std::optional<process_error> sync_ipc_error(const std::string& syscall, const std::string& file,
                                            const std::vector<std::string>& args,
                                            const spawn_options& options) {
  const auto is_ipc = [](const stdio_spec& s) { return s.kind == stdio_kind::ipc; };
  if (std::none_of(options.stdio.begin(), options.stdio.end(), is_ipc))
    return std::nullopt;
  close_handed_over(options.stdio);
  return process_error(make_error_code(errc::ipc_sync), syscall + ' ' + file, file, args);
}

child_process spawn_reporting(const asio::any_io_executor& ex, std::string file,
                              std::vector<std::string> args, const spawn_options& options,
                              std::optional<process_error>& failure) {
  return v1::spawn_impl(ex, std::move(file), std::move(args), options, failure);
}

} // namespace detail
} // namespace childproc
