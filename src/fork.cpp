// fork(): spawn with a socketpair after the stdio slots, and a channel on the parent's end.
#include "child_state.hpp"
#include "posix/unique_fd.hpp"

#include <childproc/fork.hpp>
#include <childproc/spawn.hpp>

#include <cerrno>
#include <climits>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace childproc {
inline namespace v1 {
namespace {

using detail::posix::unique_fd;

bool is_script(const std::string& program) {
  for (const char* ext : {".js", ".mjs", ".cjs"}) {
    const std::string_view e(ext);
    if (program.size() > e.size() && program.compare(program.size() - e.size(), e.size(), e) == 0)
      return true;
  }
  return false;
}

// The socketpair of a fork and the channel on the parent's end; the child's end goes to
// `child_end`. Both ends live above the stdio slots' fds 0..2, so that a closed fd 0 of this
// process is never filled by the channel (and then handed to the worker as its stdin).
std::shared_ptr<detail::channel_state> make_channel(const asio::any_io_executor& ex,
                                                    detail::wire format, std::size_t max_message,
                                                    unique_fd& child_end, const std::string& file,
                                                    const std::vector<std::string>& args) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
    throw process_error(std::error_code(errno, std::system_category()), "spawn " + file, file, args,
                        spawn_step::pipe);
  unique_fd parent_end(detail::posix::above_stdio(pair[0]));
  int error = errno;
  child_end.reset(detail::posix::above_stdio(pair[1]));
  if (parent_end && !child_end)
    error = errno;
  if (!parent_end || !child_end)
    throw process_error(std::error_code(error, std::system_category()), "spawn " + file, file, args,
                        spawn_step::pipe);
  ::fcntl(parent_end.get(), F_SETFL, ::fcntl(parent_end.get(), F_GETFL) | O_NONBLOCK);
  return std::make_shared<detail::channel_state>(ex, std::move(parent_end), format, max_message);
}

} // namespace

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf);
  if (n < 0)
    throw std::system_error(errno, std::system_category(), "childproc: readlink /proc/self/exe");
  return std::string(buf, static_cast<std::size_t>(n));
}

child_process fork(const asio::any_io_executor& ex, std::string program,
                   std::vector<std::string> args, fork_options options) {
  const bool via_exec_path = is_script(program) || !options.exec_path.empty();
  const detail::wire format =
      options.serialization
          ? (*options.serialization == serialization::node_json ? detail::wire::node_json
                                                                : detail::wire::framed)
          : (via_exec_path ? detail::wire::node_json : detail::wire::framed);
  std::string file = std::move(program);
  if (via_exec_path) {
    std::vector<std::string> argv = options.exec_argv;
    argv.push_back(std::move(file));
    argv.insert(argv.end(), std::make_move_iterator(args.begin()),
                std::make_move_iterator(args.end()));
    args = std::move(argv);
    file = options.exec_path.empty() ? "node" : options.exec_path;
  }

  // Node's fork: stdio inherited unless silent; the channel goes right after it.
  if (options.stdio == spawn_options{}.stdio && !options.silent)
    options.stdio = {stdio::inherit, stdio::inherit, stdio::inherit};
  while (options.stdio.size() < 3)
    options.stdio.push_back(options.silent ? stdio::pipe : stdio::inherit);
  // The channel, and everything else that can fail, is made before the launch: once the child
  // exists, nothing may fail.
  unique_fd child_end;
  auto ipc = make_channel(ex, format, options.max_message_size, child_end, file, args);
  const std::string slot = std::to_string(options.stdio.size());
  options.stdio.push_back(stdio::fd(child_end.get()));
  if (format == detail::wire::framed) {
    options.env_overrides["CHILDPROC_CHANNEL_FD"] = slot;
    options.env_overrides["CHILDPROC_CHANNEL_MAX_MESSAGE"] =
        std::to_string(ipc->incoming.max_message_size());
  } else {
    options.env_overrides["NODE_CHANNEL_FD"] = slot;
    options.env_overrides["NODE_CHANNEL_SERIALIZATION_MODE"] = "json";
  }
  child_process child =
      detail::spawn_with_channel(ex, file, std::move(args), std::move(options), std::move(ipc));
  child_end.reset(); // the child has its copy (or never will)
  return child;
}

} // namespace v1
} // namespace childproc
