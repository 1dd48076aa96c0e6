// Seed 004, "Memory and Performance Considerations", measured instead of asserted: the memory
// of 1, 10 and 100 idle child processes (1 000 with --with-1000).
//
//   | 1 child process    | ~25MB each   |      | 100 child processes  | ~2.5GB total |
//   | 10 child processes | ~250MB total |      | 1000 child processes | ~25GB total  |
//
// Each worker is this binary, forked with a channel, idle once it has said "ready". RSS counts
// every page a process maps, shared ones (the executable, libc) in each process again; PSS
// (/proc/<pid>/smaps_rollup) divides a shared page between the processes that map it, so the sum
// of the PSS is what the workers really cost the machine. The seed's figures are Node's: a
// Node process starts its own V8 heap, a C++ worker does not.
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

#include <fstream>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <vector>

namespace {

// A field of /proc/<pid>/smaps_rollup in kB ("Rss:", "Pss:").
long smaps_kb(long pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string name;
  long kb = 0;
  while (in >> name) {
    if (name == field && in >> kb)
      return kb;
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

struct row {
  std::size_t workers;
  double rss_mb, pss_mb;
};

row measure(std::size_t count) {
  boost::asio::io_context io;
  std::vector<childproc::child_process> workers;
  std::size_t ready = 0;
  row result{count, 0, 0};
  for (std::size_t i = 0; i < count; ++i) {
    workers.push_back(childproc::fork(io, childproc::self_exe(), {"idle"}));
    workers.back().on_message([&](const childproc::message&) {
      if (++ready < count)
        return;
      for (auto& w : workers) { // every worker is up and idle: measure, then let them go
        result.rss_mb += double(smaps_kb(*w.pid(), "Rss:")) / 1024;
        result.pss_mb += double(smaps_kb(*w.pid(), "Pss:")) / 1024;
      }
      for (auto& w : workers)
        w.disconnect();
    });
  }
  io.run(); // until every worker has exited and was reaped
  return result;
}

int idle_worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.send("ready");
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "idle")
    return idle_worker();
  std::vector<std::size_t> counts{1, 10, 100};
  if (argc > 1 && std::string_view(argv[1]) == "--with-1000") {
    counts.push_back(1000);
    rlimit files{}; // a channel fd per worker: 1 000 may pass a soft limit of 1 024
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
      files.rlim_cur = files.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &files);
    }
  }
  fmt::print("| idle workers | RSS total | PSS total | PSS each | seed's Node figure |\n");
  fmt::print("|---|---|---|---|---|\n");
  for (const auto count : counts) {
    const auto r = measure(count);
    fmt::print("| {} | {:.1f} MB | {:.1f} MB | {:.2f} MB | ~{} MB total |\n", r.workers, r.rss_mb,
               r.pss_mb, r.pss_mb / double(r.workers), 25 * r.workers);
  }
}
