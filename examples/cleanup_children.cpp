// Seed 004, "Key Takeaways": "Always clean up child processes to prevent memory leaks". Two ways
// childproc cleans up, each checked against the system's own view (/proc: no child of ours left,
// and none of the pids we started alive, whoever its parent; waitpid reporting ECHILD: no
// zombie):
//
// - handles that own their child: kill_on_destroy, so dropping the handle (leaving the scope,
//   an exception) sends the child SIGTERM; the event loop then reaps it;
// - a pool: close() ends every worker.
//
// Workers that idle forever stand for the leak: nothing else would end them.
#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

// The pids whose parent is this process, live or zombie, from /proc/<pid>/stat.
std::set<long> our_children() {
  std::set<long> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')'); // the command name may hold spaces and parentheses
    if (paren == std::string::npos)
      continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(line.c_str() + paren + 1, " %c %ld", &state, &ppid) == 2 && ppid == ::getpid())
      children.insert(std::stol(name));
  }
  return children;
}

// How many of these pids still name a process (live or zombie), whoever its parent: a worker
// that escaped (re-parented, or started by a helper process) would be one.
std::size_t still_alive(const std::vector<pid_t>& pids) {
  std::size_t alive = 0;
  for (const pid_t pid : pids)
    alive += std::filesystem::exists("/proc/" + std::to_string(pid)) ? 1 : 0;
  return alive;
}

bool no_zombie() {
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// A worker that does nothing and never ends by itself: it only waits for its parent.
int idle_worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([](const childproc::message&) {});
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  boost::asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, [](const childproc::message& m) { return m; });
  if (argc > 1 && std::string_view(argv[1]) == "idle")
    return idle_worker();

  std::vector<pid_t> forked;
  {
    std::vector<childproc::child_process> workers;
    childproc::fork_options options;
    options.kill_on_destroy = true;
    for (int i = 0; i < 5; ++i) {
      workers.push_back(childproc::fork(io, childproc::self_exe(), {"idle"}, options));
      forked.push_back(workers.back().pid().value_or(0));
    }
    fmt::print("5 forked workers with kill_on_destroy, running: {}\n", our_children().size());
  }         // the handles are dropped here: each worker gets SIGTERM
  io.run(); // reaps them
  fmt::print("handles dropped, loop run: children left {}, no zombie: {}, of their {} pids still "
             "alive: {}\n",
             our_children().size(), no_zombie(), forked.size(), still_alive(forked));

  io.restart();
  childproc::pool pool(io, {.min_workers = 3, .max_workers = 3});
  std::vector<pid_t> pooled;
  pool.on_worker_create([&](pid_t pid) { pooled.push_back(pid); });
  pool.async_run("ping", [&](boost::system::error_code, childproc::message) {
    fmt::print("a pool of {} workers answered, running: {}\n", pooled.size(),
               our_children().size());
    pool.async_close([](boost::system::error_code) {});
  });
  io.run();
  fmt::print("pool closed, loop run: children left {}, no zombie: {}, of their {} pids still "
             "alive: {}\n",
             our_children().size(), no_zombie(), pooled.size(), still_alive(pooled));
  return our_children().empty() && no_zombie() && still_alive(forked) + still_alive(pooled) == 0
             ? 0
             : 1;
}
