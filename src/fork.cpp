// fork(): spawn with Node's fork defaults and a channel at the stdio::ipc slot.
#include "fork_stdio.hpp"
#include "handed_over.hpp"

#include <childproc/fork.hpp>
#include <childproc/spawn.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <unistd.h>

namespace childproc {
inline namespace v1 {
namespace {

bool is_script(const std::string& program) {
  for (const char* ext : {".js", ".mjs", ".cjs"}) {
    const std::string_view e(ext);
    if (program.size() > e.size() && program.compare(program.size() - e.size(), e.size(), e) == 0)
      return true;
  }
  return false;
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
  if (!options.serialization)
    options.serialization = via_exec_path ? serialization::node_json : serialization::framed;
  std::string file = std::move(program);
  if (via_exec_path) {
    std::vector<std::string> argv = options.exec_argv;
    argv.push_back(std::move(file));
    argv.insert(argv.end(), std::make_move_iterator(args.begin()),
                std::make_move_iterator(args.end()));
    args = std::move(argv);
    file = options.exec_path.empty() ? "node" : options.exec_path;
  }

  detail::settle_fork_stdio(options, file, args);
  // spawn() makes the channel at the stdio::ipc slot, before the launch, and names the slot in
  // NODE_CHANNEL_FD (CHILDPROC_CHANNEL_FD when framed).
  return spawn(ex, std::move(file), std::move(args), std::move(options));
}

} // namespace v1

namespace detail {

void settle_fork_stdio(fork_options& options, const std::string& file,
                       const std::vector<std::string>& args) {
  if (options.stdio.empty()) {
    options.stdio.assign(3, options.silent ? stdio::pipe : stdio::inherit);
    options.stdio.push_back(stdio::ipc);
    return;
  }
  if (std::find(options.stdio.begin(), options.stdio.end(), stdio::ipc) == options.stdio.end()) {
    close_handed_over(options.stdio); // refused: as a spawn would, so that their writers end
    throw process_error(make_error_code(errc::ipc_required), "spawn " + file, file, args);
  }
  while (options.stdio.size() < 3)
    options.stdio.push_back(stdio::pipe); // as Node's: `silent` applies only to no table
}

} // namespace detail
} // namespace childproc
