// The source document's "CPU-intensive calculations" example: the range 1..limit is split across
// one forked worker per CPU core; each finds the primes of its chunk and sends them back; the
// parent merges, sorts and prints them (the Express route is left out).
//
//   const numWorkers = require('os').cpus().length;
//   const chunkSize = Math.ceil(limit / numWorkers);
//   for (let i = 0; i < numWorkers; i++) {
//     const worker = fork('workers/prime-finder.js');
//     worker.send({ start: i * chunkSize, end: Math.min(start + chunkSize, limit) });
//     worker.on('message', (primes) => { ...; worker.kill(); });
//   }
//
// (The snippet's worker loops `i <= end` while the next chunk starts at `end`, so a prime on a
// chunk boundary would be counted twice; the port uses half-open ranges [start, end) and a last
// chunk that ends at limit + 1.)
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>

namespace {

bool is_prime(long n) {
  if (n < 2)
    return false;
  for (long i = 2; i * i <= n; ++i)
    if (n % i == 0)
      return false;
  return true;
}

int worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& msg) {
    const long start = msg.json().at("start").to_number<long>();
    const long end = msg.json().at("end").to_number<long>();
    boost::json::array primes;
    for (long i = start; i < end; ++i)
      if (is_prime(i))
        primes.push_back(i);
    parent.send(boost::json::value(std::move(primes)));
  });
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return worker();
  const long limit = argc > 1 ? std::atol(argv[1]) : 100;
  const long workers = std::max(1u, std::thread::hardware_concurrency());
  const long chunk = (limit + workers) / workers; // covers 0..limit inclusive

  boost::asio::io_context io;
  std::vector<long> all;
  long completed = 0;
  std::vector<childproc::child_process> children;
  for (long i = 0; i < workers; ++i) {
    const long start = i * chunk;
    const long end = std::min(start + chunk, limit + 1);
    auto& worker = children.emplace_back(childproc::fork(io, childproc::self_exe(), {"child"}));
    worker.send(boost::json::value{{"start", start}, {"end", end}});
    worker.on_message([&, i](const childproc::message& msg) {
      for (const auto& p : msg.json().as_array())
        all.push_back(p.to_number<long>());
      if (++completed == workers) {
        std::sort(all.begin(), all.end());
        fmt::print("{{\"primes\": [{}], \"count\": {}, \"range\": \"1-{}\"}}\n",
                   fmt::join(all, ", "), all.size(), limit);
      }
      children[static_cast<std::size_t>(i)].kill();
    });
  }
  io.run();
}
