// childproc's error category and process_error.
#include "asio_error.hpp"

#include <childproc/error.hpp>

#include <boost/system/error_category.hpp>
#include <boost/system/error_condition.hpp>
#include <boost/system/generic_category.hpp>
#include <boost/system/system_category.hpp>

#include <cerrno>
#include <cstring>
#include <string>

namespace childproc {
inline namespace v1 {
namespace {

// A Boost category, seen through its std::error_category view by the std::error_code forms: the
// code then converts to a boost::system::error_code of this same category (Asio completions) and
// back without being wrapped.
class category final : public boost::system::error_category {
public:
  constexpr category() noexcept : boost::system::error_category(0x6368696c6470726fULL) {}
  const char* name() const noexcept override { return "childproc"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
    case errc::invalid_argument:
      return "invalid argument";
    case errc::max_buffer_exceeded:
      return "maxBuffer length exceeded";
    case errc::timed_out:
      return "timed out";
    case errc::nonzero_exit:
      return "child exited with a non-zero code";
    case errc::killed:
      return "child was killed by a signal";
    case errc::channel_closed:
      return "channel closed";
    case errc::message_too_large:
      return "message too large";
    case errc::malformed_message:
      return "malformed message";
    case errc::exit_status_unknown:
      return "exit status unknown: reaped elsewhere";
    case errc::already_disconnected:
      return "IPC channel is already disconnected";
    case errc::pool_closed:
      return "the pool is closed";
    case errc::queue_full:
      return "Task queue is at limit";
    case errc::worker_died:
      return "the worker running the task exited";
    case errc::task_failed:
      return "the task failed in the worker";
    case errc::unknown_task:
      return "the worker has no task of that name";
    case errc::worker_start_failed:
      return "workers keep failing during start-up";
    case errc::unknown_signal:
      return "Unknown signal";
    case errc::ipc_one_pipe:
      return "Child process can have only one IPC pipe";
    case errc::ipc_required:
      return "Forked processes must have an IPC channel, missing value 'ipc' in options.stdio";
    case errc::ipc_sync:
      return "IPC cannot be used with synchronous forks";
    case errc::stdio_from_used:
      return "the stdio::from() pipe was already handed to a spawn";
    case errc::handle_not_received:
      return "Handle did not reach the receiving process correctly";
    }
    return "unknown childproc error";
  }
  boost::system::error_condition default_error_condition(int value) const noexcept override {
    const auto generic = [](int e) {
      return boost::system::error_condition(e, boost::system::generic_category());
    };
    switch (static_cast<errc>(value)) {
    case errc::invalid_argument:
    case errc::unknown_signal:
    case errc::ipc_one_pipe:
    case errc::ipc_required:
    case errc::ipc_sync:
      return generic(EINVAL);
    case errc::timed_out:
      return generic(ETIMEDOUT);
    case errc::max_buffer_exceeded:
      return generic(ENOBUFS);
    case errc::stdio_from_used:
      return generic(EBADF);
    case errc::message_too_large:
      return generic(EMSGSIZE);
    default:
      return {value, *this};
    }
  }
};

// "ENOENT" for system errors (Node's err.code), the message otherwise.
std::string code_name(const std::error_code& ec) {
  if (ec.category() == std::system_category() || ec.category() == std::generic_category()) {
    if (const char* name = ::strerrorname_np(ec.value()))
      return name;
  }
  return ec.message();
}

std::string what_text(const std::error_code& ec, const std::string& syscall, spawn_step step) {
  std::string text = syscall + ' ' + code_name(ec);
  if (step != spawn_step::none) {
    text += " (";
    text += to_string(step);
    text += ')';
  }
  return text;
}

} // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance; // the std view, which converts back to `instance` in a boost error_code
}

std::string_view to_string(spawn_step step) noexcept {
  switch (step) {
  case spawn_step::none:
    return "none";
  case spawn_step::pipe:
    return "pipe";
  case spawn_step::clone:
    return "clone";
  case spawn_step::dup2:
    return "dup2";
  case spawn_step::close_fds:
    return "close_fds";
  case spawn_step::setsid:
    return "setsid";
  case spawn_step::setpgid:
    return "setpgid";
  case spawn_step::pdeathsig:
    return "pdeathsig";
  case spawn_step::chdir:
    return "chdir";
  case spawn_step::setgid:
    return "setgid";
  case spawn_step::setuid:
    return "setuid";
  case spawn_step::execve:
    return "execve";
  case spawn_step::open_dev_null:
    return "open_dev_null";
  }
  return "unknown";
}

process_error::process_error(std::error_code code, std::string syscall, std::string path,
                             std::vector<std::string> args, spawn_step step)
    : std::system_error(code, what_text(code, syscall, step)), syscall_(std::move(syscall)),
      path_(std::move(path)), args_(std::move(args)), step_(step) {}

} // namespace v1

namespace detail {

boost::system::error_code to_asio_error(const std::error_code& ec) noexcept {
  // Boost 1.81 wraps a std::error_code of these categories opaquely (value() becomes a hash,
  // the category "std:unknown"); their Boost twins keep the errno. childproc's own category
  // and Asio's convert back to themselves.
  if (ec.category() == std::system_category())
    return {ec.value(), boost::system::system_category()};
  if (ec.category() == std::generic_category())
    return {ec.value(), boost::system::generic_category()};
  return ec;
}

} // namespace detail
} // namespace childproc
