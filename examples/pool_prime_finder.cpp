// The source document's prime finder ("CPU-intensive calculations"), on a pool: the range
// 1..limit is split into one chunk per CPU, each chunk is a pool task, and the chunks' primes are
// concatenated and sorted (the Express route is left out: each request is a function call).
//
//   const numWorkers = require('os').cpus().length;
//   const chunkSize = Math.ceil(limit / numWorkers);
//   for (let i = 0; i < numWorkers; i++) {
//     const worker = fork('workers/prime-finder.js');
//     worker.send({ start: i * chunkSize, end: Math.min(start + chunkSize, limit) });
//     worker.on('message', (primes) => { allPrimes = allPrimes.concat(primes); ...;
//                                        worker.kill(); });
//   }
//
// The snippet forks numWorkers new processes for every request and kills them after; the pool
// starts its nproc workers once, and every request reuses them (two requests here, on the same
// workers). As in fork_prime_finder, the chunks are half-open, [start, end), with the last one
// ending at limit + 1: the snippet's `i <= end` counts a prime on a chunk boundary twice.
#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

namespace {

namespace json = boost::json;

bool is_prime(long n) {
  if (n < 2)
    return false;
  for (long i = 2; i * i <= n; ++i)
    if (n % i == 0)
      return false;
  return true;
}

// workers/prime-finder.js: the primes of [start, end), in a worker process.
childproc::message prime_finder(const childproc::message& chunk) {
  const long start = chunk.json().at("start").to_number<long>();
  const long end = chunk.json().at("end").to_number<long>();
  json::array primes;
  for (long i = start; i < end; ++i)
    if (is_prime(i))
      primes.push_back(i);
  return json::value(std::move(primes));
}

using primes_done = std::function<void(std::vector<long> primes)>;

// The route: one task per chunk, all at once; `done` gets the sorted primes of 0..limit.
void find_primes(childproc::pool& pool, long limit, primes_done done) {
  struct request {
    std::vector<long> primes;
    std::size_t pending;
    primes_done done;
  };
  const auto chunks = static_cast<long>(pool.max_workers());
  const long chunk_size = (limit + chunks) / chunks; // covers 0..limit inclusive
  auto req =
      std::make_shared<request>(request{{}, static_cast<std::size_t>(chunks), std::move(done)});
  for (long i = 0; i < chunks; ++i) {
    const long start = i * chunk_size;
    const long end = std::min(start + chunk_size, limit + 1);
    pool.async_run(json::value{{"start", start}, {"end", end}},
                   [req](boost::system::error_code ec, childproc::message primes) {
                     if (ec)
                       throw boost::system::system_error(ec, "prime finder task");
                     for (const auto& p : primes.json().as_array())
                       req->primes.push_back(p.to_number<long>());
                     if (--req->pending == 0) {
                       std::sort(req->primes.begin(), req->primes.end());
                       req->done(std::move(req->primes));
                     }
                   });
  }
}

void print(long limit, const std::vector<long>& primes) {
  const auto last = std::span(primes).last(std::min<std::size_t>(5, primes.size()));
  fmt::print("{{\"count\": {}, \"last\": [{}], \"range\": \"1-{}\"}}\n", primes.size(),
             fmt::join(last, ", "), limit);
}

} // namespace

int main() {
  boost::asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, prime_finder);

  const std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
  childproc::pool pool(io, {.min_workers = cpus, .max_workers = cpus});
  find_primes(pool, 100, [&](std::vector<long> primes) {
    print(100, primes);
    find_primes(pool, 100'000, [&](std::vector<long> more) {
      print(100'000, more);
      const auto started = pool.stats().workers_started;
      fmt::print("2 requests, {} chunks each, on the same workers: {}\n", cpus, started == cpus);
      pool.async_close([](boost::system::error_code ec) {
        if (ec)
          throw boost::system::system_error(ec, "pool close");
      });
    });
  });
  io.run();
}
