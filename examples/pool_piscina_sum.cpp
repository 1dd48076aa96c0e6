// The source document's Piscina snippet, over processes: a pool of max(1, cpus - 1) workers
// created once, and a /sum route that hands each request's loop to a worker, so that the main
// event loop stays free.
//
//   const pool = new Piscina({ filename: "./longTask.js",
//                              maxThreads: Math.max(1, os.cpus().length - 1) });
//   app.get("/sum", async (req, res) => {
//     const { result, pid } = await pool.run({ n: 1e10 });
//     res.send({ result, child_pid: pid, main_pid: process.pid })
//   })
//
//   // longTask.js
//   export default function longComputation({n}) {
//     let sum = 0
//     for (let i = 0; i < n; i++) sum += i
//     return { result: sum, pid: threadId }
//   }
//
// The workers are this same binary: main() serves the pool's tasks when it is started as a
// worker. The route is a plain coroutine called a few times at once, standing in for concurrent
// HTTP requests (the HTTP server is not childproc's). The worker answers its own process id,
// where Piscina's thread can only give its threadId (its process.pid is the main one).
//
// n is 1e8, not the snippet's 1e10: the example runs as a test and must take well under a
// second a request; and the sum for 1e10, about 5e19, does not fit in 64 bits (JavaScript's
// doubles only round it).
#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cstddef>
#include <set>
#include <thread>
#include <unistd.h>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;

constexpr long long n = 100'000'000;
constexpr int requests = 3;

// longTask.js: runs in a worker process.
childproc::message long_computation(const childproc::message& task) {
  const auto count = task.json().at("n").to_number<long long>();
  volatile long long sum = 0; // volatile: keep the loop, as the snippet's is real work
  for (long long i = 0; i < count; ++i)
    sum = sum + i;
  return json::value{{"result", sum}, {"pid", ::getpid()}};
}

// app.get("/sum"): the reply the route would send.
asio::awaitable<json::value> sum_route(childproc::pool& pool) {
  const childproc::message task(json::value{{"n", n}});
  const auto answer = co_await pool.async_run(task, asio::use_awaitable);
  // Built member by member: GCC 12 rejects a braced json::value in a coroutine's co_return.
  json::object reply;
  reply["result"] = answer.json().at("result");
  reply["child_pid"] = answer.json().at("pid");
  reply["main_pid"] = ::getpid();
  co_return reply;
}

} // namespace

int main() {
  asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, long_computation);

  const std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
  childproc::pool pool(io, {.max_workers = std::max<std::size_t>(1, cpus - 1)});
  std::set<pid_t> workers;
  pool.on_worker_create([&](pid_t pid) { workers.insert(pid); });

  int answered = 0;
  bool from_workers = true;
  for (int i = 0; i < requests; ++i)
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          const auto reply = co_await sum_route(pool);
          fmt::print("{}\n", json::serialize(reply));
          const auto child_pid = reply.at("child_pid").to_number<pid_t>();
          from_workers = from_workers && child_pid != ::getpid() && workers.count(child_pid) == 1;
          if (++answered == requests)
            co_await pool.async_close(asio::use_awaitable);
        },
        [](std::exception_ptr e) {
          if (e)
            std::rethrow_exception(e);
        });
  io.run();

  if (answered != requests || !from_workers) {
    fmt::print("a reply did not come from a pool worker ({} workers started)\n", workers.size());
    return 1;
  }
  fmt::print("{} replies, each from one of the pool's {} worker processes, none from main\n",
             answered, workers.size());
  return 0;
}
